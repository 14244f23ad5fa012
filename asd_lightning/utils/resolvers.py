"""OmegaConf resolvers used by the configs (registered once on import)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """True when no W&B API key is configured (env ``WANDB_API_KEY`` or ``~/.netrc``)."""
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return True
    return not any("wandb" in host for host in hosts)


def run_name(machine_types, seed, trial=None) -> str:
    """A run's name for loggers: machine type(s) and seed, and the trial number in a search."""
    name = f"{'-'.join(str(m) for m in machine_types)}-seed{seed}"
    return name if trial is None else f"{name}-trial{trial}"


def sweep_group(default: str) -> str:
    """Inside a multirun job, the sweep folder's name (one W&B group per sweep); else ``default``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return default


def pretrain_name(family: str, year, machine_types, channels, seed) -> str:
    """The folder name of a pre-training run (``logs/pretrained/<it>``), which its fine-tuning
    finds: everything that makes it another pre-training (method family, data year, machine
    types, microphone channels where chosen, seed), so that no two pre-trainings share one."""
    channel = f"_{channels}" if channels not in (None, "") else ""
    return f"{family}_{year}_{'-'.join(str(m) for m in machine_types)}{channel}_seed{seed}"


def synth_machine_types(year) -> list[str]:
    """The synthetic dataset's default machine types of ``year`` (fan, gearbox, valve; in 2026
    fan, gearboxEmu, valveEmu)."""
    from asd_lightning.synth.years import default_machine_types

    return list(default_machine_types(int(year)))


def register_resolvers() -> None:
    """``${eval:'1 + 2'}``, ``${join:${data.machine_types}}``, ``${wandb_offline:}``, ``${cwd:}``,
    ``${run_name:...}``, ``${sweep_group:...}``, ``${pretrain_name:...}`` and ``${synth_machine_types:...}``."""
    resolvers = {
        "cwd": os.getcwd,
        "eval": lambda expression: eval(expression, {"__builtins__": {}}),  # arithmetic in configs
        "join": lambda items, sep="-": sep.join(str(i) for i in items),
        "pretrain_name": pretrain_name,
        "run_name": run_name,
        "sweep_group": sweep_group,
        "synth_machine_types": synth_machine_types,
        "wandb_offline": wandb_offline,
    }
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()
