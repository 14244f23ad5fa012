"""Build callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def instantiate_group(config: DictConfig | None, kind: type) -> list:
    """Instantiate every ``_target_`` entry of a group config (e.g. ``callbacks``), checking the type."""
    objects = []
    for name, entry in (config or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            obj = hydra.utils.instantiate(entry)
            if not isinstance(obj, kind):
                raise TypeError(f"config entry '{name}' built {type(obj).__name__}, expected a {kind.__name__}")
            objects.append(obj)
    return objects


def instantiate_callbacks(config: DictConfig | None) -> list[L.Callback]:
    return instantiate_group(config, L.Callback)


def instantiate_loggers(config: DictConfig | None) -> list[Logger]:
    return instantiate_group(config, Logger)
