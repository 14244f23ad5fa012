"""Pre-flight: what a run will need, checked before the first epoch (``train.py`` calls
:func:`check_settings` before anything is built and :func:`check_run` before fitting), so that no
problem shows only after training. Every problem is a :class:`PreflightError`: one line naming the
setting to change (the entry points print it without a traceback and exit 2).

0. Settings: values out of range (crop lengths, batch size, seed, inlier-model sizes,
   ``trainer.max_epochs=0`` for a method that trains) name the override and the valid range.
1. The run owns its folder (:func:`claim_run_folder`): a lock that a second run in the same
   folder reports (a dead run's lock is taken over), and the folder's settings, which a later
   run (a resume) must match. Every folder the run writes (run folder, checkpoints, submission, bundles) can be written.
2. The data: clip index and decoded caches (a cache build first checks its disk has room), with
   errors that name the Hydra override that would accept the file (``data.decode.resample=true``).
3. Clip lengths: every clip that is cut into test segments (the target machines' test clips and
   the fit clips that thresholds and inlier models need) holds one test window or crop; training
   clips shorter than the training crop are reported (their crops repeat the clip).
4. The callbacks' own checks of the data: ``check_fit_clips(clips)`` (the inlier callback: every
   tested section has clips to fit its model on).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from shutil import disk_usage
from typing import Any, Iterable

import lightning as L
from omegaconf import DictConfig, OmegaConf

from asd_lightning.data.clip_index import ClipIndexError
from asd_lightning.data.decode import AudioDecodeError
from asd_lightning.features.segments import min_clip_samples
from asd_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

OUTPUT_KEYS = ("dirpath", "output_dir", "bundle_dir")  # callback settings that name a folder it writes
RUN_STATE = ".asd-run"  # in the run folder: ``lock`` (held while a run uses the folder) and ``config.yaml``
SEED_MAX = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces
# settings that say how a run ran, not what it computes: a resume may change them
RUNTIME_DATA_KEYS = ("num_workers", "pin_memory", "progress", "cache_dir", "eval_batch_size")


class PreflightError(UserError):
    """Something the run will need is missing; the message names it and the setting to change."""


# ---------------------------------------------------------------- 0. settings
def _positive(cfg: DictConfig, key: str, what: str, integer: bool = True, minimum: float = 1) -> None:
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if value is None or isinstance(value, (DictConfig, str)):
        return
    bad = isinstance(value, bool) or value < minimum or (integer and int(value) != value)
    if bad:
        valid = f"an integer >= {minimum}" if integer else "a number > 0"
        raise PreflightError(f"{key}={value}: {what} must be {valid}")


def check_settings(cfg: DictConfig) -> None:
    """Values out of range, before anything is built: one line naming the override and the range."""
    crop = OmegaConf.select(cfg, "data.train_crop", default=None)
    if isinstance(crop, DictConfig):
        if crop.get("seconds") is not None and not float(crop.seconds) > 0:
            raise PreflightError(f"data.train_crop.seconds={crop.seconds}: the training crop must be longer "
                                 "than 0 s (e.g. the clips' length)")
        _positive(cfg, "data.train_crop.frames", "the training crop (log-mel frames)")
    _positive(cfg, "data.batch_size", "the batch size")
    _positive(cfg, "data.eval_batch_size", "the evaluation batch size")
    seed = cfg.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX):
        raise PreflightError(f"seed={seed}: the seed must be an integer in [0, {SEED_MAX}] (or null: no seeding)")
    for name, entry in (cfg.get("callbacks") or {}).items():
        model = entry.get("model") if isinstance(entry, DictConfig) else None
        if isinstance(model, DictConfig):
            for key, what in (("n_components", "the GMM's number of components"),
                              ("k", "the number of nearest neighbours"),
                              ("n_neighbors", "the LOF's number of neighbours")):
                _positive(cfg, f"callbacks.{name}.model.{key}", what)


def check_epochs(cfg: DictConfig, model: L.LightningModule | None) -> None:
    """``trainer.max_epochs=0`` would test an untrained model: refused unless the method trains nothing."""
    epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if cfg.get("train") and epochs == 0 and not getattr(model, "training_free", False):
        raise PreflightError("trainer.max_epochs=0 trains nothing, so the run would score an untrained model; "
                             "set trainer.max_epochs>=1 (or test a checkpoint: train=false ckpt_path=<file>)")


# ---------------------------------------------------------------- 1. the run folder
class RunFolder:
    """The lock of a run folder (``<folder>/.asd-run/lock``), held while the run uses it; a
    dead run's lock is free (the operating system drops it with the process). Hydra writes a
    run's ``.hydra/`` before any check: the run that owns the folder keeps a copy
    (``.asd-run/hydra``), which a refused run puts back."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state = folder / RUN_STATE
        self._handle = None

    def acquire(self) -> "RunFolder":
        self.state.mkdir(parents=True, exist_ok=True)
        handle = open(self.state / "lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            self.restore_hydra()
            raise PreflightError(f"{self.folder} is in use by another run ({holder}); two runs in one folder "
                                 "overwrite each other's checkpoints and scores: give this run its own folder "
                                 "(hydra.run.dir=<folder>)") from None
        handle.seek(0), handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def record(self, cfg: DictConfig) -> None:
        """Keep this run's settings (:func:`run_settings`): a later run in the folder must match
        them; and a copy of its ``.hydra/``."""
        OmegaConf.save(OmegaConf.create(run_settings(cfg)), self.state / "config.yaml")
        if (self.folder / ".hydra").is_dir():
            shutil.copytree(self.folder / ".hydra", self.state / "hydra", dirs_exist_ok=True)

    def restore_hydra(self) -> None:
        """Put back the owner's ``.hydra/`` that a refused run's Hydra overwrote."""
        if (self.state / "hydra").is_dir():
            shutil.copytree(self.state / "hydra", self.folder / ".hydra", dirs_exist_ok=True)

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """What makes a run's results: its seed, method and data (how it loads the data aside)."""
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    for key in RUNTIME_DATA_KEYS:
        data.pop(key, None)
    model = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") is not None else {}
    return {"seed": cfg.get("seed"), "model": model, "data": data}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def claim_run_folder(cfg: DictConfig) -> RunFolder:
    """Lock the run folder and check that a run already in it had the same settings (a resume).
    :meth:`RunFolder.record` keeps this run's settings for the next one, once its pre-flight passed
    (a run that failed the checks leaves nothing to match)."""
    folder = Path(str(cfg.paths.output_dir)).expanduser().absolute()
    claim = RunFolder(folder).acquire()
    try:
        saved, settings = claim.state / "config.yaml", run_settings(cfg)
        if saved.is_file():
            before, now = _flat(OmegaConf.to_container(OmegaConf.load(saved))), _flat(settings)
            # settings the record lacks are new in this version of the toolkit (a default that
            # a run resumed after an upgrade gains), not a change of the run's own settings
            differ = sorted((k for k in before if before[k] != now.get(k)),
                            key=lambda k: (k.count("."), k))  # top-level settings (seed) first
            if differ:
                listed = ", ".join(f"{k}: {before.get(k)!r} there, {now.get(k)!r} now" for k in differ[:3])
                more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
                claim.restore_hydra()
                raise PreflightError(f"{folder} holds a run with other settings ({listed}{more}); resuming or "
                                     "re-running it with these would mix two runs: give this run its own folder "
                                     "(hydra.run.dir=<folder>) or delete that one")
    except BaseException:
        claim.release()
        raise
    return claim


def checkpoint_bytes(model: L.LightningModule) -> int:
    """About the size of one checkpoint: the weights, and two optimiser moments (Adam) per
    trainable parameter (a frozen or LoRA-adapted pre-trained encoder has none for its weights)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return weights + moments + buffers + (1 << 20)


def check_free_space(callbacks: Iterable[L.Callback], model: L.LightningModule) -> None:
    """The checkpoint folder's disk holds the checkpoints the run keeps (top-k, ``last.ckpt``)
    plus one being written."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    size = checkpoint_bytes(model)
    for callback in callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath:
            continue
        kept = (callback.save_top_k if callback.save_top_k >= 0 else 10) + bool(callback.save_last)
        need = size * (kept + 1)
        folder = Path(callback.dirpath).absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        free = disk_usage(existing).free
        if free < need:
            raise PreflightError(f"{folder}: {free / 2**20:.0f} MiB free, but the checkpoints need about "
                                 f"{need / 2**20:.0f} MiB ({kept} kept and one being written, about "
                                 f"{size / 2**20:.1f} MiB each); free space or set "
                                 "callbacks.model_checkpoint.dirpath=<a folder with room>")


# ---------------------------------------------------------------- 2. folders and data
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
        if error.key == "channel" and getattr(datamodule, "channels", None):
            # named channels (data.channels) set the decoded channel; decode.channel is unused then
            raise error.spelled(lambda key, value: "data.channels=null") from None
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


def check_clip_lengths(datamodule, fix: str = "data.test_segments=...") -> None:
    """Raise when a clip that gets test segments is too short for one; warn about training clips
    shorter than the training crop. ``fix``: the override that sets the test segments' length."""
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
            f"({fix})")
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


def test_segments_override(cfg: DictConfig) -> str:
    """The override that sets the test segments' length: ``data.train_crop.seconds`` where the
    test crops follow the training crop (the margin recipes), else ``data.test_segments``."""
    segments = OmegaConf.select(cfg, "data.test_segments", default=None)
    raw = OmegaConf.to_container(segments, resolve=False) if isinstance(segments, DictConfig) else {}
    for key in ("seconds", "frames"):
        if "data.train_crop." + key in str(raw.get(key, "")):
            return f"data.train_crop.{key}=<at most the shortest clip's length>"
    return "data.test_segments=..."


def check_run(cfg: DictConfig, datamodule: L.LightningDataModule, callbacks: Iterable[L.Callback],
              model: L.LightningModule | None = None, trainer: L.Trainer | None = None) -> RunFolder | None:
    """All pre-flight checks, cheapest first; raises the first problem found. With ``trainer``
    (on its global rank zero) the run folder is claimed: release the returned lock when the run ends.
    :func:`check_settings` runs earlier, before anything is built (``train.py``)."""
    check_epochs(cfg, model)
    check_writable(output_folders(cfg))
    claim = claim_run_folder(cfg) if trainer is not None and trainer.is_global_zero else None
    try:
        callbacks = list(callbacks)
        if model is not None:
            check_free_space(callbacks, model)
        prepare_data(datamodule)
        if getattr(datamodule, "clips", None) is not None and getattr(datamodule, "table", None) is not None:
            check_clip_lengths(datamodule, test_segments_override(cfg))
            check_callbacks(callbacks, datamodule)
        if claim is not None:
            claim.record(cfg)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    return claim
