"""Pre-flight: what a run will need, checked before the first epoch (``train.py`` calls
:func:`check_run` before fitting), so that no problem shows only after training.

1. Every folder the run writes (run folder, checkpoints, submission, bundles) can be written.
2. The data: clip index and decoded caches (a cache build first checks its disk has room), with
   errors that name the Hydra override that would accept the file (``data.decode.resample=true``).
3. Clip lengths: every clip that is cut into test segments (the target machines' test clips and
   the fit clips that thresholds and inlier models need) holds one test window or crop; training
   clips shorter than the training crop are reported (their crops repeat the clip).
4. The callbacks' own checks of the data: ``check_fit_clips(clips)`` (the inlier callback: every
   tested section has clips to fit its model on).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable

import lightning as L
from omegaconf import DictConfig

from asd_lightning.data.clip_index import ClipIndexError
from asd_lightning.data.decode import AudioDecodeError
from asd_lightning.features.segments import min_clip_samples

log = logging.getLogger(__name__)

OUTPUT_KEYS = ("dirpath", "output_dir", "bundle_dir")  # callback settings that name a folder it writes


class PreflightError(ValueError):
    """Something the run will need is missing; the message names it and the setting to change."""


def output_folders(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra override that sets each folder the run writes → the folder."""
    folders = {"hydra.run.dir": Path(str(cfg.paths.output_dir))}
    for name, entry in (cfg.get("callbacks") or {}).items():
        for key in OUTPUT_KEYS:
            if isinstance(entry, DictConfig) and entry.get(key):
                folders[f"callbacks.{name}.{key}"] = Path(str(entry[key]))
    return folders


def check_writable(folders: dict[str, Path]) -> None:
    """Create each folder and a file in it, then remove what was created; raise naming the folder."""
    for override, folder in folders.items():
        folder = folder.expanduser().absolute()
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".preflight-"):
                pass
        except OSError as error:
            raise PreflightError(f"cannot write to {folder} ({error.strerror or error}); "
                                 f"set {override}=<a writable folder>") from None
        finally:
            for path in created:  # deepest first
                if path.is_dir():
                    try:
                        path.rmdir()
                    except OSError:
                        break


def prepare_data(datamodule: L.LightningDataModule) -> None:
    """Index and decode the data now; errors name the Hydra override that fixes them."""
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except AudioDecodeError as error:
        raise error.spelled("data.decode.{key}={value}") from None
    except ClipIndexError as error:
        raise error.spelled("data.{key}={value}") from None


def _describe(segments: dict, frontend) -> str:
    kind = segments.get("kind", "clip")
    if kind == "windows":
        return f"one test window of {segments['frames']} frames (hop {frontend.hop_length} samples)"
    if kind == "crops":
        return f"one test crop of {segments['seconds']} s"
    return f"the log-mel front end (n_fft {frontend.n_fft})"


def check_clip_lengths(datamodule) -> None:
    """Raise when a clip that gets test segments is too short for one; warn about training clips
    shorter than the training crop."""
    clips, lengths = datamodule.clips, datamodule.table.lengths[datamodule.clips["clip_id"].to_numpy()]
    rate = datamodule.decode_options.sample_rate
    need = min_clip_samples(datamodule.test_segments, datamodule.frontend, rate)
    segmented = clips["machine"].isin(datamodule.machine_types).to_numpy()
    short = segmented & (lengths < need)
    if short.any():
        i = int(lengths[short].argmin())
        row, length = clips[short].iloc[i], int(lengths[short][i])
        raise PreflightError(
            f"{int(short.sum())} clip(s) are shorter than {_describe(datamodule.test_segments, datamodule.frontend)}, "
            f"which needs {need} samples ({need / rate:.3f} s); the shortest is {row['path']} with {length} samples "
            f"({length / rate:.3f} s). Remove such clips from the dataset or choose test segments that fit them "
            f"(data.test_segments=...)")
    crop = datamodule.crop_samples
    trained = (clips["subset"] == "train").to_numpy() & (lengths < crop)
    if trained.any():
        i = int(lengths[trained].argmin())
        log.warning("%d training clip(s) are shorter than the training crop of %d samples (%.3f s); their crops "
                    "repeat the clip. The shortest: %s (%d samples)", int(trained.sum()), crop, crop / rate,
                    clips[trained].iloc[i]["path"], int(lengths[trained][i]))


def check_callbacks(callbacks: Iterable[L.Callback], datamodule) -> None:
    """Run each callback's ``check_fit_clips`` on the target machines' clips."""
    targets = datamodule.clips[datamodule.clips["machine"].isin(datamodule.machine_types)]
    for callback in callbacks:
        check = getattr(callback, "check_fit_clips", None)
        if callable(check):
            check(targets)


def check_run(cfg: DictConfig, datamodule: L.LightningDataModule, callbacks: Iterable[L.Callback]) -> None:
    """All pre-flight checks, cheapest first; raises the first problem found."""
    check_writable(output_folders(cfg))
    prepare_data(datamodule)
    if getattr(datamodule, "clips", None) is not None and getattr(datamodule, "table", None) is not None:
        check_clip_lengths(datamodule)
        check_callbacks(callbacks, datamodule)
