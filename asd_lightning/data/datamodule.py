"""LightningDataModules for the DCASE Task 2 datasets.

Data flow: DCASE folder → clip index (:mod:`.clip_index`) → decoded int16 cache per machine
type (:mod:`.audio_cache`, built once in ``prepare_data``) → int16 crops in the loaders →
on the device, in :meth:`DCASEDataModule.on_after_batch_transfer`: float conversion,
per-machine amplitude normalisation (statistics of the training clips only) and the log-mel
front end, then the evaluation segmentation the method asks for.

Training batches carry ``wave`` ``[B, samples]`` (normalised float) and ``features``
``[B, 1, n_mels, frames]``. Whole-clip batches (test, :meth:`clip_dataloader`) carry
``features`` shaped by ``test_segments``:

* ``{kind: clip}`` → ``[B, 1, n_mels, T]`` (the whole clip);
* ``{kind: crops, seconds: 2.0, num: 10}`` → ``[B, S, 1, n_mels, frames]`` evenly spaced crops;
* ``{kind: windows, frames: 64, hop: 8}`` → ``[B, S, 1, n_mels, frames]`` sliding windows.

Channels (:attr:`DCASEDataModule.channels`, DCASE 2026's ``near``/``far`` microphones): one
named channel gives the shapes above; ``both`` gives ``wave`` ``[B, 2, samples]`` and features
with the channels where the 1 is: ``[B, 2, n_mels, frames]``, ``[B, S, 2, n_mels, frames]``.
Training crops of a method whose ``channel_mode`` is ``per_channel`` (the default,
:class:`~asd_lightning.models.base.ASDMethod`) are unfolded into one item per channel
(``[2B, 1, ...]``, labels repeated); ``paired`` methods get both channels together.

Supplemental recordings (DCASE 2025 ``supplemental/``) never enter the training or test
subsets unless asked: ``supplemental.noise_snr_db`` mixes noise-only clips into training crops
on the device (:meth:`DCASEDataModule.mix_noise`), ``supplemental.machine_clips`` adds the clean
machine clips as training clips (source domain; with ``labels: attribute`` their own class).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, default_collate

from asd_lightning.data.audio_cache import AudioCache
from asd_lightning.data.clip_index import LABEL_SETS, ClipIndexError, build_clip_index, find_machine_dirs, label_keys
from asd_lightning.data.datasets import ClipDataset, ClipTable, CropDataset, collate_crops
from asd_lightning.data.decode import DecodeOptions
from asd_lightning.data.years import year_facts
from asd_lightning.data.samplers import (
    ClassBalancedBatchSampler,
    EpochBatchSampler,
    EqualLengthBatchSampler,
    OutlierExposureBatchSampler,
    SameMachinePairBatchSampler,
    ShuffledBatchSampler,
)
from asd_lightning.features.waveform import build_frontend
from asd_lightning.features.segments import normalize_int16, segment_clips
from asd_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

DOMAIN_CODES = {"source": 0, "target": 1, "unknown": -1}
LABEL_CODES = {"normal": 0, "anomaly": 1, "unknown": -1}
SAMPLERS = ("random", "balanced_classes", "same_machine_pairs", "target_vs_outliers")
SUPPLEMENTAL_KEYS = {"noise_snr_db", "noise_prob", "machine_clips"}
NOISE_STREAM = 7919  # seed-sequence word of the noise mixing draws
STATS_CLIPS_PER_MACHINE = 256


def _collate_clips(items: list[dict]) -> dict:
    batch = default_collate(items)
    batch["whole_clip"] = True
    return batch


class DCASEDataModule(L.LightningDataModule):
    """A DCASE Task 2 dataset copy as training crops and whole evaluation clips.

    Args:
        root: dataset folder (above the machine-type folders; dev and eval copies may sit
            side by side, e.g. ``dev_data/`` and ``eval_data/``).
        year: challenge year (naming rules and official score).
        machine_types: the target machine types (one model is trained on all of them).
        outlier_machine_types: other machine types added to training as pseudo-anomalies
            (``"all"`` = every other machine type found); empty for none.
        train_sections / test_sections: section numbers to use (None = all found).
        labels: the label set the classifiers train on: ``section`` (one class per machine
            type and section), ``attribute`` (per attribute combination within a section: the
            classes of DCASE 2023+, where a machine type has one section) or
            ``attribute_domain`` (also split by domain); see :func:`~asd_lightning.data.clip_index.label_keys`.
            Batches carry the class as ``class`` (-1 for clips of no training class) and the
            section class as ``section``.
        train_domains: domains of the training clips to use.
        test_domains: domains of the test clips to score (None = all; anonymised evaluation
            clips need the ground truth for their domain).
        val_fraction: share of training clips held out for validation, stratified by
            machine type, section and domain.
        drop_last: the ``same_machine_pairs`` and ``target_vs_outliers`` samplers leave out an
            epoch's partial batch; ``False`` trains on every item (self-supervised pre-training
            on all the data).
        batch_size / eval_batch_size: crops per training batch (pairs per batch for
            ``same_machine_pairs``, i.e. the ``N`` of each DG-Mix branch) / whole clips per
            test batch.
        sampler: ``random``, ``balanced_classes`` (every class of ``labels`` drawn equally
            often: rare target-domain or attribute classes oversampled), ``same_machine_pairs``
            or ``target_vs_outliers`` (1:1).
        features: :class:`~asd_lightning.features.log_mel.LogMel` settings, or ``{kind: waveform}``
            for the waveform itself (``[B, 1, 1, samples]``; :mod:`asd_lightning.features.waveform`).
        train_crop: ``{seconds: s}`` or ``{frames: n}`` (n log-mel frames) per training item;
            ``per_clip``: ``all`` (every window ``hop`` apart, in the same unit, per epoch) or
            the number of random crops per clip and epoch (default 1).
        test_segments: how a whole clip becomes model inputs (see module docstring).
        amplitude_norm: normalise waveforms per machine type to zero mean, unit variance.
        cache_dir: where decoded caches live.
        pin_memory: pinned host memory for the batches; None: when the trainer runs on a CUDA device.
        decode: :class:`~asd_lightning.data.decode.DecodeOptions` settings.
        ground_truth: official ground-truth CSV(s) for anonymised evaluation clips.
        on_unmatched: ``error`` or ``warn`` for WAV names that fit no pattern.
        synthetic: settings for :func:`asd_lightning.synth.write_synthetic_dataset`; when set
            and ``root`` does not hold that dataset complete, it is written there first.
        channels: a channel name of the year's files (2026: ``near``, the default as in the
            official baseline, or ``far``) or ``both``; None = ``decode.channel`` where it is set
            (not ``first``), else the year's default channel (mono years: ``decode.channel``).
        supplemental: use of the supplemental recordings (2025): ``noise_snr_db: [lo, hi]``
            mixes a noise-only clip of the crop's machine type into each training crop at an SNR
            drawn uniformly from that range (with probability ``noise_prob``, default 1), on the
            device, drawn from (seed, epoch, batch); ``machine_clips: true`` trains on the clean
            machine clips too. None: they are indexed but never used.
    """

    default_year: int = 2022

    def __init__(
        self,
        root: str | Path,
        year: int | None = None,
        machine_types: Sequence[str] = ("fan",),
        outlier_machine_types: Sequence[str] | str = (),
        train_sections: Sequence[int] | None = None,
        test_sections: Sequence[int] | None = None,
        labels: str = "section",
        train_domains: Sequence[str] = ("source", "target"),
        test_domains: Sequence[str] | None = None,
        val_fraction: float = 0.1,
        drop_last: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        sampler: str = "random",
        features: dict[str, Any] | None = None,
        train_crop: dict[str, float] | None = None,
        test_segments: dict[str, Any] | None = None,
        amplitude_norm: bool = True,
        cache_dir: str | Path = "~/.cache/asd_lightning",
        decode: dict[str, Any] | None = None,
        ground_truth: str | Path | None = None,
        on_unmatched: str = "error",
        synthetic: dict[str, Any] | None = None,
        seed: int = 0,
        progress: bool = True,
        channels: str | None = None,
        supplemental: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        self.year = int(year or self.default_year)
        self._check_year(self.year)
        self.machine_types = list(machine_types)
        if not self.machine_types:
            raise UserError("machine_types must name at least one machine type")
        self.outlier_machine_types = outlier_machine_types
        self.train_sections = None if train_sections is None else [int(s) for s in train_sections]
        self.test_sections = None if test_sections is None else [int(s) for s in test_sections]
        if labels not in LABEL_SETS:
            raise UserError(f"data.labels must be one of {', '.join(LABEL_SETS)}, got {labels!r}")
        self.labels = labels
        self.train_domains = self._domains(train_domains, "train_domains")
        self.test_domains = None if test_domains is None else self._domains(test_domains, "test_domains")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        self.drop_last = bool(drop_last)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        if sampler not in SAMPLERS:
            raise UserError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler = sampler
        self.decode_options = DecodeOptions(**(decode or {}))
        self.channels = channels
        self.channel_names, self.channel_options = self._channel_options(channels)
        self.decode_options = self.channel_options[0]  # what a single-channel model bundle decodes
        self.supplemental = dict(supplemental or {})
        unknown = set(self.supplemental) - SUPPLEMENTAL_KEYS
        if unknown:
            raise UserError(f"data.supplemental takes {', '.join(sorted(SUPPLEMENTAL_KEYS))}, got {sorted(unknown)}")
        snr = self.supplemental.get("noise_snr_db")
        if snr is not None and (len(snr) != 2 or float(snr[0]) > float(snr[1])):
            raise UserError(f"data.supplemental.noise_snr_db must be [low, high] in dB, got {snr}")
        self.frontend = build_frontend(self.decode_options.sample_rate, features)
        self.train_crop = dict(train_crop or {"seconds": 2.0})
        per_clip = self.train_crop.get("per_clip", 1)
        if per_clip == "all" and not self.train_crop.get("hop"):
            raise UserError("data.train_crop.per_clip=all needs the window hop: set data.train_crop.hop "
                             "(in the unit of the crop, frames or seconds)")
        if per_clip != "all" and (not str(per_clip).isdigit() or int(per_clip) < 1):
            raise UserError(f"data.train_crop.per_clip must be 'all' or a positive number, got {per_clip!r}")
        self.test_segments = dict(test_segments or {"kind": "clip"})
        self.amplitude_norm = amplitude_norm
        self.cache_dir = Path(cache_dir).expanduser()
        self.ground_truth = ground_truth
        self.on_unmatched = on_unmatched
        self.synthetic = dict(synthetic) if synthetic else None
        self.seed = seed
        self.progress = progress
        self.clips: pd.DataFrame | None = None
        self.table: ClipTable | None = None

    # ------------------------------------------------------------------ set-up
    def _channel_options(self, channels: str | None) -> tuple[list[str], list[DecodeOptions]]:
        """Channel names and the decode options of each (one cache per channel)."""
        facts = year_facts(self.year)
        name = channels or facts.default_channel
        if name is None or (channels is None and self.decode_options.channel != "first"):  # decode.channel set
            return [str(self.decode_options.channel)], [self.decode_options]
        if not facts.channels:
            raise UserError(f"data.channels={name}: the DCASE {self.year} files have no named channels (2026 "
                             "has near and far); choose a channel of other data with data.decode.channel")
        names = list(facts.channels) if name == "both" else [name]
        unknown = [n for n in names if n not in facts.channels]
        if unknown:
            raise UserError(f"data.channels must be one of {', '.join(facts.channels)} or both for DCASE "
                             f"{self.year}, got {name!r}")
        return names, [replace(self.decode_options, channel=facts.channels[n]) for n in names]

    @property
    def num_channels(self) -> int:
        return len(self.channel_options)

    def _check_year(self, year: int) -> None:
        if year < 2020:
            raise UserError(f"unsupported DCASE year {year}")

    @staticmethod
    def _domains(domains: Sequence[str], name: str) -> list[str]:
        domains = [str(d) for d in domains]
        if not domains or set(domains) - {"source", "target"}:
            raise UserError(f"data.{name} must name source and/or target, got {domains}")
        return domains

    def _ensure_dataset(self) -> None:
        """With ``synthetic`` settings, (re)write the synthetic dataset unless ``root`` holds it."""
        if self.synthetic is not None:
            from asd_lightning.synth import ensure_synthetic_dataset

            ensure_synthetic_dataset(self.root, year=self.year, **self.synthetic)

    def _index(self) -> pd.DataFrame:
        if not self.root.is_dir():
            raise ClipIndexError(f"dataset root {self.root} does not exist or is not a folder", key="root",
                                 value="<dataset folder>")
        found = sorted(find_machine_dirs(self.root, self.year))
        if not found:
            build_clip_index(self.root, self.year)  # raises its error naming the expected layout
        missing = [m for m in self.machine_types if m not in found]
        if missing:
            raise UserError(f"machine type(s) {missing} not found under {self.root}; found {found}")
        outliers = self.outlier_machine_types
        if isinstance(outliers, str):
            if outliers != "all":
                raise UserError(f"outlier_machine_types must be a list or 'all', got {outliers!r}")
            outliers = [m for m in found if m not in self.machine_types]
        outliers = [m for m in outliers if m not in self.machine_types]
        unknown = [m for m in outliers if m not in found]
        if unknown:
            raise UserError(f"outlier machine type(s) {unknown} not found under {self.root}; found {found}")
        self.outlier_types = list(outliers)
        # only the selected machine types' folders are read: other folders may hold anything
        index = build_clip_index(self.root, self.year, machine_types=self.machine_types + self.outlier_types,
                                 ground_truth=self.ground_truth, on_unmatched=self.on_unmatched)

        def sections_ok(frame: pd.DataFrame, wanted: list[int] | None) -> pd.Series:
            return frame["section"].isin(wanted) if wanted is not None else pd.Series(True, index=frame.index)

        train = index[(index["split"] == "train") & index["domain"].isin(self.train_domains)]
        target_train = train[train["machine"].isin(self.machine_types) & sections_ok(train, self.train_sections)]
        outlier_train = train[train["machine"].isin(self.outlier_types)]
        test = index[(index["split"] == "test") & index["machine"].isin(self.machine_types)]
        test = test[sections_ok(test, self.test_sections)]
        if self.test_domains is not None:
            unknown = test[test["domain"] == "unknown"]
            if not unknown.empty:
                raise UserError(f"data.test_domains={self.test_domains} needs the domain of every test clip, but "
                                 f"{len(unknown)} are anonymised (e.g. {unknown['path'].iloc[0]}): pass the official "
                                 "ground truth with data.ground_truth=<folder>")
            test = test[test["domain"].isin(self.test_domains)]
        if self.test_sections is not None:  # a protocol's sections partly absent: its score would be another one
            for machine in self.machine_types:
                found = set(test.loc[test["machine"] == machine, "section"].tolist())
                missing = [s for s in self.test_sections if s not in found]
                if found and missing:
                    log.warning("data.test_sections=%s: %s has no test clips of section(s) %s under %s; only %s "
                                "are scored, so the figures are not those of the requested sections", self.test_sections,
                                machine, ", ".join(f"{s:02d}" for s in missing), self.root,
                                ", ".join(f"{s:02d}" for s in sorted(found)))
        if test.empty and (self.test_sections is not None or self.test_domains is not None):
            raise UserError(f"no test clips for {self.machine_types} (sections {self.test_sections}, domains "
                             f"{self.test_domains or 'all'}) under {self.root}")
        if target_train.empty:
            raise UserError(f"no training clips for {self.machine_types} (sections {self.train_sections}, "
                             f"domains {self.train_domains}) under {self.root}")
        extra = index[(index["split"] == "supplemental") & index["machine"].isin(self.machine_types)]
        wanted = ({"noise"} if self.supplemental.get("noise_snr_db") is not None else set()) | (
            {"machine"} if self.supplemental.get("machine_clips") else set())
        extra = extra[extra["kind"].isin(wanted)].copy()
        if "noise" in wanted and not (extra["kind"] == "noise").any():
            raise UserError(f"data.supplemental.noise_snr_db is set but there are no noise-only clips "
                             f"(<machine>/supplemental/section_XX_noise_NNNN_.wav) for {self.machine_types} "
                             f"under {self.root}")
        machine_rows = extra["kind"] == "machine"  # clean machine clips train as source-domain normals
        extra.loc[machine_rows, ["split", "domain", "label"]] = ["train", "source", "normal"]
        return pd.concat([target_train, outlier_train, test, extra], ignore_index=True)

    def _caches(self, clips: pd.DataFrame) -> dict[str, tuple[AudioCache, ...]]:
        """Per machine type, one cache per channel (:attr:`channel_options`)."""
        return {
            machine: tuple(AudioCache.open_or_build(
                group["path"], self.cache_dir, name=f"{machine}", options=options,
                num_workers=None, progress=self.progress,
            ) for options in self.channel_options)
            for machine, group in clips.groupby("machine", sort=True)
        }

    def prepare_data(self) -> None:
        """Write the synthetic dataset if asked, index the files and decode them once."""
        self._ensure_dataset()
        self._caches(self._index())

    def setup(self, stage: str | None = None) -> None:
        """Index, open the caches, assign section and label classes, split validation clips, fit
        amplitude statistics."""
        if self.clips is not None:
            return
        self._ensure_dataset()
        clips = self._index()
        caches = self._caches(clips)
        names = sorted(caches)
        self.machine_names = self.machine_types + self.outlier_types
        self.section_classes = sorted(
            {(m, s) for m, s, split in zip(clips["machine"], clips["section"], clips["split"])
             if split == "train" and m in self.machine_types}
        )
        section_id = {key: i for i, key in enumerate(self.section_classes)}
        keys = label_keys(clips, self.labels)
        trained = (clips["split"] == "train").to_numpy() & clips["machine"].isin(self.machine_types).to_numpy()
        self.label_classes = sorted({key for key, use in zip(keys, trained) if use})
        class_id = {key: i for i, key in enumerate(self.label_classes)}
        # the section class of every label class (a label class lies within one section)
        self.class_sections = [section_id[key[:2]] for key in self.label_classes]
        clips["clip_id"] = np.arange(len(clips))
        clips["subset"] = np.where(clips["split"] == "test", "test", "train")
        clips.loc[(clips["split"] == "supplemental").to_numpy(), "subset"] = "supplemental"
        clips.loc[self._validation_rows(clips), "subset"] = "val"
        meta = {
            "clip_id": clips["clip_id"].to_numpy(),
            "machine": clips["machine"].map({m: i for i, m in enumerate(self.machine_names)}).to_numpy(),
            "section": np.array([section_id.get((m, s), -1) for m, s in zip(clips["machine"], clips["section"])]),
            "class": np.array([class_id.get(key, -1) for key in keys]),
            "domain": clips["domain"].map(DOMAIN_CODES).to_numpy(),
            "label": clips["label"].map(LABEL_CODES).to_numpy(),
            "is_target": clips["machine"].isin(self.machine_types).to_numpy(),
        }
        cache_id = clips["machine"].map({m: i for i, m in enumerate(names)}).to_numpy()
        cache_row = np.array([caches[m][0].position(p) for m, p in zip(clips["machine"], clips["path"])])
        self.table = ClipTable(meta, [caches[m] for m in names], cache_id, cache_row)
        self.clips = clips
        self._fit_amplitude_stats()
        self._collect_noise()

    def _collect_noise(self) -> None:
        """Noise-only supplemental clips per machine class, int16 ``[N, (channels,) samples]``."""
        self.noise_bank: dict[int, torch.Tensor] = {}
        if self.supplemental.get("noise_snr_db") is None:
            return
        for i, machine in enumerate(self.machine_names):
            rows = np.flatnonzero(((self.clips["machine"] == machine) & (self.clips["subset"] == "supplemental")
                                   & (self.clips["kind"] == "noise")).to_numpy())
            if len(rows):
                shortest = int(self.table.lengths[rows].min())
                self.noise_bank[i] = torch.from_numpy(np.stack([np.asarray(self.table.waveform(r))[..., :shortest]
                                                                for r in rows]))

    def _validation_rows(self, clips: pd.DataFrame) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        train = clips[clips["split"] == "train"]
        chosen: list[int] = []
        train = train[train["kind"] != "machine"] if "kind" in train else train
        for _, group in train.groupby(["machine", "section", "domain"], sort=True):
            count = int(round(self.val_fraction * len(group)))
            if count and count < len(group):
                chosen += rng.choice(group.index.to_numpy(), size=count, replace=False).tolist()
        return np.array(sorted(chosen), dtype=np.int64)

    def _fit_amplitude_stats(self) -> None:
        """Mean and standard deviation of the training waveforms of each machine type."""
        mean = np.zeros(len(self.machine_names))
        std = np.ones(len(self.machine_names))
        rng = np.random.default_rng(self.seed)
        for i, machine in enumerate(self.machine_names):
            rows = np.flatnonzero((self.clips["machine"] == machine).to_numpy() & (self.clips["subset"] == "train").to_numpy())
            if len(rows) > STATS_CLIPS_PER_MACHINE:
                rows = np.sort(rng.choice(rows, STATS_CLIPS_PER_MACHINE, replace=False))
            total = total_sq = count = 0.0
            for row in rows:
                samples = np.asarray(self.table.waveform(row), dtype=np.float64) / 32768.0
                total += samples.sum()
                total_sq += np.square(samples).sum()
                count += samples.size
            mean[i] = total / count
            std[i] = max(np.sqrt(max(total_sq / count - mean[i] ** 2, 0.0)), 1e-8)
        self.amplitude_mean = torch.tensor(mean, dtype=torch.float32)
        self.amplitude_std = torch.tensor(std, dtype=torch.float32)

    # ------------------------------------------------------------------ loaders
    def rows(self, subset: str, targets_only: bool = False) -> np.ndarray:
        """Clip ids of ``train``, ``val``, ``test`` or ``fit`` (= train + val) clips.

        ``targets_only`` drops the clips of outlier machine types.
        """
        subsets = ("train", "val") if subset == "fit" else (subset,)
        keep = self.clips["subset"].isin(subsets).to_numpy()
        if targets_only:
            keep = keep & self.clips["machine"].isin(self.machine_types).to_numpy()
        return np.flatnonzero(keep)

    @property
    def crop_samples(self) -> int:
        if "frames" in self.train_crop:
            return self.frontend.samples_for_frames(int(self.train_crop["frames"]))
        return int(round(float(self.train_crop["seconds"]) * self.decode_options.sample_rate))

    @property
    def crop_context_frames(self) -> int:
        """Frames of context that each training window of ``train_crop.per_clip: all`` is
        featurised with and then loses (0 otherwise): ``ceil(n_fft / 2 / hop_length)``. With
        them a window's first and last frames see the clip's neighbouring samples (or the
        whole clip's reflect padding at its ends), as the test windows cut from the whole
        clip's log-mel do; a separately padded crop differs there (on 28 real DCASE 2023
        clips by 3.0 dB on average, up to 49 dB, in 2 of 64 frames: docs/reproduction.md)."""
        frontend = self.frontend
        if self.train_crop.get("per_clip", 1) != "all" or not getattr(frontend, "center", False):
            return 0
        return -(-(frontend.n_fft // 2) // frontend.hop_length)

    @property
    def crop_hop_samples(self) -> int | None:
        """Samples between the windows of ``train_crop.per_clip: all`` (``hop`` frames apart
        give the whole clip's log-mel windows ``hop`` frames apart, with
        :attr:`crop_context_frames`)."""
        if "hop" not in self.train_crop:
            return None
        hop = self.train_crop["hop"]
        if "frames" in self.train_crop:
            return int(hop) * self.frontend.hop_length
        return int(round(float(hop) * self.decode_options.sample_rate))

    def crop_dataset(self, subset: str, random: bool) -> CropDataset:
        """The ``train`` or ``val`` clips as :class:`CropDataset` items per ``train_crop``."""
        return CropDataset(self.table, self.rows(subset), self.crop_samples, random=random, seed=self.seed,
                           per_clip=self.train_crop.get("per_clip", 1), hop_samples=self.crop_hop_samples,
                           context_samples=self.crop_context_frames * getattr(self.frontend, "hop_length", 0))

    def _loader(self, dataset, **kwargs) -> DataLoader:
        # own generator: creating a loader iterator must not draw from the global torch RNG,
        # which the methods' mixup uses (results would depend on num_workers)
        return DataLoader(dataset, num_workers=self.num_workers, pin_memory=self.pins_memory(),
                          persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed), **kwargs)

    def pins_memory(self) -> bool:
        """``pin_memory``, or where it is None, whether the attached trainer runs on a CUDA device
        (pinned batches: DG-Mix pre-training's full step 20 % faster at 8 workers on an H200,
        benchmarks/h200-2026-12-04)."""
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _crop_loader(self, dataset: CropDataset, **kwargs) -> DataLoader:
        return self._loader(dataset, collate_fn=collate_crops, **kwargs)

    def train_batch_sampler(self, dataset: CropDataset) -> EpochBatchSampler:
        """The ``sampler`` of the training loader over ``dataset``'s items (all shard
        themselves under DDP: ``use_distributed_sampler: false``)."""
        if self.sampler == "same_machine_pairs":  # batch_size pairs, i.e. N per branch
            return SameMachinePairBatchSampler(self.table.meta["machine"].numpy()[dataset.rows], self.batch_size,
                                               self.seed, drop_last=self.drop_last)
        if self.sampler == "balanced_classes":
            return ClassBalancedBatchSampler(self.table.meta["class"].numpy()[dataset.rows], self.batch_size, self.seed)
        if self.sampler == "target_vs_outliers":
            return OutlierExposureBatchSampler(self.table.meta["is_target"].numpy()[dataset.rows], self.batch_size,
                                               self.seed, drop_last=self.drop_last)
        return ShuffledBatchSampler(len(dataset), self.batch_size, self.seed)

    def train_dataloader(self) -> DataLoader:
        dataset = self.crop_dataset("train", random=True)
        sampler = self.train_batch_sampler(dataset)
        if self.trainer is not None:
            # Lightning sets the epoch at every epoch start, but a resumed fit creates the first
            # iterator before that: start at the epoch Lightning will set (the resumed one)
            sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return self._crop_loader(dataset, batch_sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.rows("val")) == 0:
            return []
        # not sharded: under DDP every rank sees every validation crop, so the synced loss is exact;
        # with per_clip: all, every window of the held-out clips
        return self._crop_loader(self.crop_dataset("val", random=False), batch_size=self.batch_size, shuffle=False)

    def clip_dataloader(self, subset: str = "test", targets_only: bool = False) -> DataLoader:
        """Whole clips of a subset (``train``, ``val``, ``fit`` or ``test``) in equal-length batches."""
        dataset = ClipDataset(self.table, self.rows(subset, targets_only))
        sampler = EqualLengthBatchSampler(dataset.lengths, self.eval_batch_size)
        return self._loader(dataset, batch_sampler=sampler, collate_fn=_collate_clips)

    def test_dataloader(self) -> DataLoader:
        return self.clip_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.clip_dataloader("test")

    # ------------------------------------------------------------------ device side
    def normalize(self, wave: torch.Tensor, machine: torch.Tensor) -> torch.Tensor:
        """int16 samples → float in [-1, 1), then per-machine zero mean / unit variance."""
        if not self.amplitude_norm:
            return normalize_int16(wave)
        return normalize_int16(wave, self.amplitude_mean.to(wave.device)[machine],
                               self.amplitude_std.to(wave.device)[machine])

    def featurize(self, wave: torch.Tensor) -> torch.Tensor:
        """Float training crops ``[..., samples]`` → features ``[..., n_mels, frames]`` on their
        device, less the crops' :attr:`crop_context_frames` on either side."""
        self.frontend.to(wave.device)
        features, context = self.frontend(wave), self.crop_context_frames
        return features[..., context:features.shape[-1] - context] if context else features

    def segment(self, wave: torch.Tensor) -> torch.Tensor:
        """Whole clips ``[B, samples]`` → model inputs per ``test_segments``; ``[B, C, samples]``
        → the same with the C channels in place of the single channel."""
        self.frontend.to(wave.device)
        if wave.dim() == 2:
            return segment_clips(wave, self.frontend, self.test_segments, self.decode_options.sample_rate)
        b, c = wave.shape[:2]
        out = segment_clips(wave.flatten(0, 1), self.frontend, self.test_segments, self.decode_options.sample_rate)
        return out.view(b, c, *out.shape[1:]).squeeze(-3).movedim(1, -3)

    def mix_noise(self, wave: torch.Tensor, machine: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Add a noise-only clip of each crop's machine type (normalised like it) at a random SNR.

        Draws (clip, position, SNR, whether to mix) come from ``(seed, epoch, batch number)``:
        a rerun or a resumed run mixes the same noise into the same crops.
        """
        low, high = (float(v) for v in self.supplemental["noise_snr_db"])
        prob = float(self.supplemental.get("noise_prob", 1.0))
        rng = np.random.default_rng((self.seed, NOISE_STREAM, *key.tolist()))
        pool = sorted(self.noise_bank)
        length = wave.shape[-1]
        crops = []
        for m in machine.tolist():  # a machine type without noise clips borrows another's
            bank = self.noise_bank[m] if m in self.noise_bank else self.noise_bank[pool[int(rng.integers(len(pool)))]]
            clip = bank[int(rng.integers(len(bank)))]
            start = int(rng.integers(max(clip.shape[-1] - length, 0) + 1))
            reps = -(-(start + length) // clip.shape[-1])  # short noise clips wrap around
            crops.append(clip.repeat(*([1] * (clip.dim() - 1)), reps)[..., start:start + length])
        snr = torch.from_numpy(rng.uniform(low, high, len(crops))).float()
        use = torch.from_numpy(rng.random(len(crops)) < prob).float()
        noise = self.normalize(torch.stack(crops).to(wave.device), machine)
        dims = tuple(range(1, wave.dim()))
        rms = lambda x: x.pow(2).mean(dim=dims).sqrt()  # noqa: E731
        gain = (use * 10.0 ** (-snr / 20.0)).to(wave.device) * rms(wave) / rms(noise).clamp_min(1e-8)
        return wave + noise * gain.view(-1, *([1] * (wave.dim() - 1)))

    def _model_channel_mode(self) -> str:
        model = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(model, "channel_mode", "per_channel")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        batch = dict(batch)
        batch["wave"] = self.normalize(batch["wave"], batch["machine"])
        if batch.get("whole_clip"):
            batch["features"] = self.segment(batch["wave"])
            return batch
        training = self.trainer is None or self.trainer.training
        if self.noise_bank and training and batch.get("key") is not None:
            batch["wave"] = self.mix_noise(batch["wave"], batch["machine"], batch["key"])
        if batch["wave"].dim() == 2:
            batch["features"] = self.featurize(batch["wave"]).unsqueeze(1)
            return batch
        if self._model_channel_mode() == "per_channel":
            batch = unfold_channels(batch)
            batch["features"] = self.featurize(batch["wave"]).unsqueeze(1)
        else:  # paired: [B, C, n_mels, frames] (waveform front end: [B, C, 1, samples])
            features = self.featurize(batch["wave"])
            batch["features"] = features if features.dim() == 4 else features.unsqueeze(2)
        return batch


def unfold_channels(batch: dict) -> dict:
    """Training crops ``wave [B, C, samples]`` → one item per channel ``[B * C, samples]``, every
    per-clip entry repeated. Order: each half of the batch, channel by channel (``[h1 c0, h1 c1,
    h2 c0, h2 c1]``), so items ``k`` and ``k + B * C / 2`` are still partners of the same pair
    where the sampler paired ``k`` and ``k + B / 2`` (``same_machine_pairs``); odd batches go
    channel by channel."""
    b, c = batch["wave"].shape[:2]
    halves = 2 if b % 2 == 0 else 1
    grid = torch.arange(b).view(halves, 1, b // halves).expand(halves, c, b // halves)
    clip = grid.reshape(-1).to(batch["wave"].device)
    channel = torch.arange(c).view(1, c, 1).expand(halves, c, b // halves).reshape(-1).to(clip.device)
    out = {}
    for name, value in batch.items():
        if name == "wave":
            out[name] = value[clip, channel]
        elif isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == b and name != "key":
            out[name] = value[clip]
        else:
            out[name] = value
    return out


class DCASE2022DataModule(DCASEDataModule):
    """DCASE 2022 Task 2 (MIMII DG + ToyADMOS2); also the 2023+ layouts (``year=2023`` ...)."""

    default_year = 2022

    def _check_year(self, year: int) -> None:
        if year < 2022:
            raise UserError(f"DCASE2022DataModule reads the 2022+ layout, got year {year}; use DCASE2021DataModule")


class DCASE2021DataModule(DCASEDataModule):
    """DCASE 2021 Task 2 (MIMII Due + ToyADMOS2): test clips in ``source_test/`` and ``target_test/``."""

    default_year = 2021

    def _check_year(self, year: int) -> None:
        if year != 2021:
            raise UserError(f"DCASE2021DataModule reads the 2021 layout, got year {year}")
