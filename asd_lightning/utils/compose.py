"""Compose a run's config outside the command line (benchmarks, notebooks, tests)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict


def compose_config(overrides: list[str], output_dir: str | Path, config_name: str = "train.yaml") -> DictConfig:
    """The config ``asd-train <overrides>`` would run, with its outputs in ``output_dir``.

    Hydra's run-time values (``${hydra:runtime.output_dir}``) are resolved against
    ``output_dir``; pass the result to :func:`asd_lightning.train.train`.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from asd_lightning.train import config_dir
    from asd_lightning.utils import resolvers  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.root_dir = str(output_dir)
        del cfg.hydra
    return cfg
