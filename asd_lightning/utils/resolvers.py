"""OmegaConf resolvers used by the configs (registered once on import)."""

from __future__ import annotations

import netrc
import os

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


def register_resolvers() -> None:
    """``${eval:'1 + 2'}``, ``${join:${data.machine_types}}``, ``${wandb_offline:}`` and ``${cwd:}``."""
    resolvers = {
        "cwd": os.getcwd,
        "eval": lambda expression: eval(expression, {"__builtins__": {}}),  # arithmetic in configs
        "join": lambda items, sep="-": sep.join(str(i) for i in items),
        "wandb_offline": wandb_offline,
    }
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()
