"""DCASE folder → clip index: one table row per WAV file.

One parser serves every DCASE Task 2 layout:

* 2020 (MIMII + ToyADMOS): ``<machine>/{train,test}/{normal,anomaly}_id_XX_NNNNNNNN.wav``;
  evaluation test clips ``id_XX_NNNNNNNN.wav``.
* 2021 (MIMII Due + ToyADMOS2): ``<machine>/train/section_XX_<domain>_train_normal_NNNN_<tokens>.wav``,
  test clips in ``source_test/`` and ``target_test/``; evaluation test clips
  ``section_XX_<domain>_test_NNNN.wav``.
* 2022 and later (MIMII DG + ToyADMOS2, 2023+ reuse it with section 00 only):
  ``<machine>/{train,test}/section_XX_<domain>_<split>_<label>_NNNN_<k>_<v>[...].wav``;
  evaluation test clips ``section_XX_NNNN.wav``. Clips without attributes end in
  ``_noAttribute.wav`` (2024) or ``_.wav`` (2025 on); both parse, with no attributes.
* 2025 on: ``<machine>/supplemental/section_XX_{machine,noise}_NNNN_.wav``, clean machine and
  noise-only recordings: split ``supplemental`` (never a training or test clip), ``kind``
  ``machine`` or ``noise``.

Each year's layout, split folders and machine types are data (:mod:`asd_lightning.data.years`).

Any folders above ``<machine>`` (``dev_data``, ``eval_data``, ...) are allowed. Labels
(and, in 2022, domains) of anonymised evaluation clips come from the official ground-truth
CSVs (:mod:`asd_lightning.data.ground_truth`); without them they are ``"unknown"``.

Columns of the returned :class:`pandas.DataFrame` (see :data:`COLUMNS`): ``path`` (absolute),
``relpath`` (to the root), ``file``, ``year``, ``machine``, ``section`` (the ID in 2020),
``domain`` (``source``/``target``/``unknown``; 2020 clips are ``source``), ``split``
(``train``/``test``), ``label`` (``normal``/``anomaly``/``unknown``), ``clip``,
``attributes`` (dict) and ``attribute_string`` (the raw tokens after the clip index).

Label sets (:func:`label_keys`): the classes a classifier is trained on are keys built from
these columns: ``section`` = (machine, section), ``attribute`` = (machine, section, attribute
combination): the attribute combination within a section, the only classes a DCASE 2023+
machine type (one section) has; ``attribute_domain`` adds the domain to that key.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from asd_lightning.data.ground_truth import GroundTruth, load_ground_truth
from asd_lightning.data.years import year_facts
from asd_lightning.utils.errors import OptionError

COLUMNS = [
    "path", "relpath", "file", "year", "machine", "section", "domain",
    "split", "label", "clip", "attributes", "attribute_string", "kind",
]
LABEL_SETS = {"section": ("section",), "attribute": ("section", "attributes"),
              "attribute_domain": ("section", "attributes", "domain")}
SPLITS = ("train", "test", "supplemental")

_SEC = r"section_(?P<section>\d{2})"
# the attribute part may be empty: ``..._0000_.wav`` (2025 on) is a clip without attributes
_DEV = re.compile(
    _SEC + r"_(?P<domain>source|target)_(?P<split>train|test)_(?P<label>normal|anomaly)_(?P<clip>\d+)(?:_(?P<attrs>.*))?$"
)
_SUPPLEMENTAL = re.compile(_SEC + r"_(?P<kind>machine|noise)_(?P<clip>\d+)(?:_(?P<attrs>.*))?$")
_EVAL_2021 = re.compile(_SEC + r"_(?P<domain>source|target)_(?P<split>test)_(?P<clip>\d+)$")
_EVAL_2022 = re.compile(_SEC + r"_(?P<clip>\d+)$")
_DEV_2020 = re.compile(r"(?P<label>normal|anomaly)_id_(?P<section>\d{2})_(?P<clip>\d+)$")
_EVAL_2020 = re.compile(r"id_(?P<section>\d{2})_(?P<clip>\d+)$")


class ClipIndexError(OptionError):
    """A dataset folder or file name does not follow the expected DCASE layout (an off-pattern
    name carries the setting that skips it, ``on_unmatched=warn``; see :class:`OptionError`)."""


@dataclass(frozen=True)
class _Parsed:
    section: int
    domain: str
    split: str
    label: str
    clip: int
    attribute_string: str
    kind: str = "clip"


def layout_year(year: int) -> int:
    """Map a challenge year onto the layout it uses (2023+ reuse the 2022 names)."""
    try:
        return year_facts(year).layout
    except ValueError as error:
        raise ClipIndexError(str(error)) from None


def split_folders(year: int) -> dict[str, str]:
    """Folders below ``<machine>/`` of ``year`` and the split each holds."""
    layout_year(year)
    return year_facts(year).splits


def parse_attributes(attribute_string: str) -> dict[str, str]:
    """Turn ``k1_v1_k2_v2`` tokens into a dict; odd token lists are kept whole under ``tokens``.

    ``noAttribute`` (DCASE 2024) and the empty string (``..._0000_.wav``, 2025 on) give an
    empty dict. 2021 names carry free tokens, which are therefore also stored under ``tokens``
    when they do not pair up.
    """
    if not attribute_string or attribute_string == "noAttribute":
        return {}
    tokens = attribute_string.split("_")
    if len(tokens) % 2:
        return {"tokens": attribute_string}
    return dict(zip(tokens[0::2], tokens[1::2]))


def label_keys(clips: pd.DataFrame, labels: str = "section") -> list[tuple]:
    """The class key of every row of a clip index under the label set ``labels`` (see the
    module docstring): ``(machine, section[, attribute_string][, domain])``. Clips whose names
    carry no attributes (anonymised evaluation clips) get an empty attribute string, so they
    never match a training clip's key."""
    if labels not in LABEL_SETS:
        raise ValueError(f"data.labels must be one of {', '.join(LABEL_SETS)}, got {labels!r}")
    columns = ["machine", "section"]
    if "attributes" in LABEL_SETS[labels]:
        columns.append("attribute_string")
    if "domain" in LABEL_SETS[labels]:
        columns.append("domain")
    return [tuple(row) for row in clips[columns].itertuples(index=False, name=None)]


def parse_clip_name(name: str, year: int, split_folder: str) -> _Parsed | None:
    """Parse one WAV base name found in ``split_folder``; ``None`` if it matches no pattern."""
    stem = name[:-4] if name.lower().endswith(".wav") else name
    layout = layout_year(year)
    if split_folder == "supplemental":
        if m := _SUPPLEMENTAL.fullmatch(stem):
            return _Parsed(int(m["section"]), "unknown", "supplemental", "unknown", int(m["clip"]),
                           m["attrs"] or "", m["kind"])
        return None
    if layout == 2020:
        if m := _DEV_2020.fullmatch(stem):
            return _Parsed(int(m["section"]), "source", split_folder, m["label"], int(m["clip"]), "")
        if split_folder == "test" and (m := _EVAL_2020.fullmatch(stem)):
            return _Parsed(int(m["section"]), "source", "test", "unknown", int(m["clip"]), "")
        return None
    if m := _DEV.fullmatch(stem):
        folder_split = "test" if split_folder.endswith("test") else "train"
        if m["split"] != folder_split:
            return None
        if layout == 2021 and m["split"] == "test" and split_folder != f"{m['domain']}_test":
            return None
        return _Parsed(int(m["section"]), m["domain"], m["split"], m["label"], int(m["clip"]), m["attrs"] or "")
    if layout == 2021 and (m := _EVAL_2021.fullmatch(stem)):
        if split_folder != f"{m['domain']}_test":
            return None
        return _Parsed(int(m["section"]), m["domain"], "test", "unknown", int(m["clip"]), "")
    if layout == 2022 and split_folder == "test" and (m := _EVAL_2022.fullmatch(stem)):
        return _Parsed(int(m["section"]), "unknown", "test", "unknown", int(m["clip"]), "")
    return None


def find_machine_dirs(root: Path, year: int) -> dict[str, list[Path]]:
    """Machine type → the folders holding its split folders, anywhere below ``root``.

    A dev copy and an evaluation/additional-training copy of one machine type are both found
    (e.g. ``dev_data/fan`` and ``eval_data/fan``).
    """
    splits = set(split_folders(year))
    found: dict[str, list[Path]] = {}
    for folder, subfolders, _ in os.walk(root):
        subfolders.sort()
        if splits.intersection(subfolders):
            machine_dir = Path(folder)
            found.setdefault(machine_dir.name, []).append(machine_dir)
            subfolders[:] = [d for d in subfolders if d not in splits]
    return found


def build_clip_index(
    root: str | Path,
    year: int,
    *,
    machine_types: Iterable[str] | None = None,
    sections: Iterable[int] | None = None,
    splits: Iterable[str] | None = None,
    ground_truth: str | Path | GroundTruth | None = None,
    on_unmatched: str = "error",
) -> pd.DataFrame:
    """Index every WAV of a DCASE dataset copy.

    Args:
        root: dataset folder (anything above the machine-type folders).
        year: challenge year; selects the naming rules (2023+ use the 2022 rules).
        machine_types: keep only these machine types (each must exist under ``root``).
        sections: keep only these section numbers (IDs in 2020).
        splits: keep only these of ``"train"``, ``"test"`` and ``"supplemental"`` (default: all).
        ground_truth: official ground-truth CSV file or folder for anonymised evaluation clips.
        on_unmatched: ``"error"`` (default) raises on a WAV whose name fits no pattern;
            ``"warn"`` skips it with a warning.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ClipIndexError(f"dataset root {root} does not exist or is not a folder")
    if on_unmatched not in ("error", "warn"):
        raise ValueError(f"on_unmatched must be 'error' or 'warn', got {on_unmatched!r}")
    machine_dirs = find_machine_dirs(root, year)
    if not machine_dirs:
        expected = "/".join(split_folders(year))
        raise ClipIndexError(f"no <machine>/{{{expected}}} folders found under {root} for the {year} layout")
    wanted = list(machine_types) if machine_types is not None else sorted(machine_dirs)
    missing = [m for m in wanted if m not in machine_dirs]
    if missing:
        raise ClipIndexError(
            f"machine type(s) {missing} not found under {root}; found {sorted(machine_dirs)}"
        )
    wanted_splits = set(splits) if splits is not None else set(SPLITS)
    bad_splits = wanted_splits - set(SPLITS)
    if bad_splits:
        raise ValueError(f"splits must be among {', '.join(SPLITS)}, got {sorted(bad_splits)}")
    wanted_sections = None if sections is None else {int(s) for s in sections}

    rows = []
    for machine in wanted:
        for machine_dir in machine_dirs[machine]:
            for split_folder, folder_split in split_folders(year).items():
                split_dir = machine_dir / split_folder
                if not split_dir.is_dir():
                    continue
                if folder_split not in wanted_splits:
                    continue
                for path in sorted(split_dir.iterdir()):
                    if path.suffix.lower() != ".wav" or not path.is_file():
                        continue
                    parsed = parse_clip_name(path.name, year, split_folder)
                    if parsed is None:
                        message = (
                            f"{path}: file name does not match the DCASE {year} layout for folder "
                            f"'{split_folder}/'"
                        )
                        if on_unmatched == "error":
                            raise ClipIndexError(message, key="on_unmatched", value="warn",
                                                 purpose="to skip such files")
                        warnings.warn(message + "; skipped", stacklevel=2)
                        continue
                    if wanted_sections is not None and parsed.section not in wanted_sections:
                        continue
                    rows.append({
                        "path": str(path),
                        "relpath": str(path.relative_to(root)),
                        "file": path.name,
                        "year": int(year),
                        "machine": machine,
                        "section": parsed.section,
                        "domain": parsed.domain,
                        "split": parsed.split,
                        "label": parsed.label,
                        "clip": parsed.clip,
                        "attributes": parse_attributes(parsed.attribute_string),
                        "attribute_string": parsed.attribute_string,
                        "kind": parsed.kind,
                    })
    index = pd.DataFrame(rows, columns=COLUMNS)
    if ground_truth is not None:
        gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
        index = gt.apply(index)
    return index.sort_values(["machine", "split", "section", "relpath"], kind="stable").reset_index(drop=True)
