"""The best trial of a search as an experiment config: ``experiment=tuned/<method>/<machine>``.

The config holds what made the trial: its base experiment (a defaults entry), its other config
group choices (``override`` entries), the search's fixed and tuned values and the settings of
the held-out report (e.g. ``protocol=two_bce_dcase2021``); the overrides that only say where
the data lives or on which hardware the search ran (``export_exclude``, shell-style patterns)
stay out, and are listed in its header.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

EXPERIMENT = "experiment"


def _group_key(override) -> str:
    return override.key_or_group + (f"@{override.package}" if override.package else "")


def tuned_config(overrides: Sequence[str], groups: Iterable[str], exclude: Sequence[str],
                 header: Sequence[str]) -> str:
    """The YAML of an experiment config applying ``overrides`` (later ones win) on top of the
    base config; ``groups``: the config groups of the run (``hydra.runtime.choices`` keys)."""
    groups = set(groups)
    defaults: dict[str, str] = {}
    body = OmegaConf.create({})
    left_out = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = _group_key(override)
        if any(fnmatch(override.key_or_group, pattern) for pattern in exclude) or override.is_delete():
            left_out.append(override.input_line)
        elif key in groups:
            defaults[key] = override.value()
        else:
            OmegaConf.update(body, override.key_or_group, override.value(), force_add=True)
    lines = ["# @package _global_"] + [f"# {line}" for line in header]
    if left_out:
        lines.append(f"# The search also ran with (not part of this config): {' '.join(left_out)}")
    lines.append("defaults:")
    if EXPERIMENT in defaults:
        lines.append(f"  - /{EXPERIMENT}/{defaults.pop(EXPERIMENT)}")
    lines += [f"  - override /{group}: {choice}" for group, choice in defaults.items()]
    lines.append("  - _self_")
    text = "\n".join(lines) + "\n"
    return text + ("\n" + OmegaConf.to_yaml(body) if len(body) else "")


def write_tuned_config(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (atomically: a rerun never leaves half a config)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def missing_tuned_config(arguments: Sequence[str], conf_dir: str | Path) -> str | None:
    """The error for an ``experiment=tuned/...`` override whose config is neither in
    ``conf_dir`` nor in a ``hydra.searchpath=[file://...]`` folder of ``arguments`` (None when
    it is found, or when a search path entry is no local folder)."""
    wanted = [a.split("=", 1)[1] for a in arguments if re.match(rf"^[+~]*{EXPERIMENT}=tuned/", a)]
    if not wanted:
        return None
    paths = [a.split("=", 1)[1] for a in arguments if a.startswith("hydra.searchpath=")]
    entries = [e.strip().strip("'\"") for p in paths for e in p.strip("[]").split(",") if e.strip()]
    if any(not e.startswith("file://") for e in entries):
        return None  # pkg:// entries: Hydra's own error says it
    folders = [Path(conf_dir)] + [Path(e[len("file://"):]) for e in entries]
    for name in wanted:
        if not any((f / EXPERIMENT / f"{name}.yaml").is_file() for f in folders):
            where = ", ".join(str(f / EXPERIMENT / name) + ".yaml" for f in folders)
            return (f"no exported config {EXPERIMENT}={name}: looked for {where}. A search exports its tuned configs "
                    "into <sweep dir>/configs (or hydra.sweeper.export_dir) and prints the command that runs them: "
                    f"add hydra.searchpath=[file://<that folder>]")
    return None
