"""Torch datasets of int16 waveform crops read from the audio caches.

Each item is a dict of tensors: ``wave`` (int16 samples), ``clip_id`` (row in the
datamodule's clip table), ``machine`` (machine-type class), ``section`` (section class among
the target machine's sections, -1 for outliers), ``class`` (class of the datamodule's label
set, -1 for clips of no training class: outliers, anonymised evaluation clips), ``domain`` (0 source, 1 target, -1 unknown),
``label`` (0 normal, 1 anomaly, -1 unknown) and ``is_target`` (1 for the target machine types,
0 for other machine types used as pseudo-anomalies). Float conversion, amplitude
normalisation and features happen later, on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from asd_lightning.data.audio_cache import AudioCache

META_COLUMNS = ("clip_id", "machine", "section", "class", "domain", "label", "is_target")


class ClipTable:
    """Integer metadata of every clip plus where its samples live (cache, row).

    A cache may be a tuple of caches, one per channel (the same files decoded with another
    channel, e.g. DCASE 2026's near and far microphones): crops and waveforms are then
    ``[channels, samples]`` instead of ``[samples]``.
    """

    def __init__(self, meta: dict[str, np.ndarray], caches: list, cache_id: np.ndarray,
                 cache_row: np.ndarray) -> None:
        self.meta = {k: torch.from_numpy(np.array(v, dtype=np.int64)) for k, v in meta.items()}
        self.caches = [tuple(c) if isinstance(c, (tuple, list)) else (c,) for c in caches]
        self.channels = len(self.caches[0]) if self.caches else 1
        self.cache_id = cache_id
        self.cache_row = cache_row
        self.lengths = np.array([self.caches[c][0].lengths[r] for c, r in zip(cache_id, cache_row)], dtype=np.int64)

    def item_meta(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.meta.items()}

    def _read(self, i: int, read) -> np.ndarray:
        parts = [read(cache, int(self.cache_row[i])) for cache in self.caches[self.cache_id[i]]]
        return parts[0] if len(parts) == 1 else np.stack(parts)

    def crop(self, i: int, start: int, length: int) -> np.ndarray:
        return self._read(i, lambda cache, row: cache.crop(row, start, length))

    def waveform(self, i: int) -> np.ndarray:
        return self._read(i, lambda cache, row: cache.waveform(row))


class CropDataset(Dataset):
    """Fixed-length crops of the clips ``rows`` of ``table``: ``per_clip`` items per clip.

    * ``per_clip="all"``: every window of every clip, at starts ``0, hop, 2 hop, ...`` (all
      that fit): an epoch sees each window once (the DG-Mix / DCASE MobileNetV2 setting);
    * ``per_clip=N``: ``N`` crops per clip at random positions (``random=True``, training) or at
      positions fixed per item from ``seed`` (``random=False``, validation, so validation losses
      are comparable).

    ``context_samples``: each crop also carries that many samples of the clip on either side
    (reflected at the clip's ends, as a centred STFT of the whole clip pads it), so that a
    centred spectrogram of the crop, less its context frames, has exactly the frames of the
    whole clip's spectrogram at that place (``per_clip="all"`` windows; see
    :attr:`~asd_lightning.data.datamodule.DCASEDataModule.crop_context_frames`).

    Random positions are drawn per batch from ``(seed, epoch, batch number)``, the key the
    training batch samplers attach (:class:`~asd_lightning.data.samplers.KeyedBatch`), so they
    do not depend on the loader workers; a batch without a key draws from torch's RNG.
    """

    def __init__(self, table: ClipTable, rows: np.ndarray, crop_samples: int, random: bool = True,
                 seed: int = 0, per_clip: int | str = 1, hop_samples: int | None = None,
                 context_samples: int = 0) -> None:
        self.table = table
        self.context = int(context_samples)
        self.clip_rows = np.asarray(rows, dtype=np.int64)
        self.crop_samples = int(crop_samples)
        self.seed = seed
        room = np.maximum(self.table.lengths[self.clip_rows] - self.crop_samples, 0)
        if per_clip == "all":
            if not hop_samples or hop_samples < 1:
                raise ValueError(f"per_clip='all' needs a window hop of at least one sample, got {hop_samples}")
            counts = room // hop_samples + 1
            self.rows = np.repeat(self.clip_rows, counts)
            self.fixed_starts = np.concatenate([np.arange(c) * hop_samples for c in counts]).astype(np.int64) \
                if len(counts) else np.zeros(0, dtype=np.int64)
            self.random = False
        else:
            per_clip = int(per_clip)
            if per_clip < 1:
                raise ValueError(f"per_clip must be 'all' or a positive number, got {per_clip}")
            self.rows = np.tile(self.clip_rows, per_clip)
            self.random = random
            # fixed positions (validation) are drawn once, per item from (seed, item)
            self.fixed_starts = None if random else np.array(
                [np.random.default_rng((seed, i)).integers(0, r + 1) if r else 0
                 for i, r in enumerate(np.tile(room, per_clip))], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def _room(self, rows: np.ndarray) -> np.ndarray:
        return np.maximum(self.table.lengths[rows] - self.crop_samples, 0)

    def _starts(self, items: np.ndarray, rows: np.ndarray, key: tuple[int, int] | None) -> np.ndarray:
        if self.fixed_starts is not None:
            return self.fixed_starts[items]
        room = self._room(rows) + 1
        if key is None:  # uniform on 0..room; torch's RNG is seeded per worker
            return (torch.rand(len(rows), dtype=torch.float64).numpy() * room).astype(np.int64)
        return np.random.default_rng((self.seed, *key)).integers(0, room)

    def __getitems__(self, items: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (PyTorch's batched fetch); :func:`collate_crops` passes it on."""
        key = getattr(items, "key", None)
        items = np.asarray(items, dtype=np.int64)
        rows = self.rows[items]
        starts = self._starts(items, rows, key)
        wave = np.stack([self._read(r, s) for r, s in zip(rows.tolist(), starts.tolist())])
        index = torch.from_numpy(rows)
        batch = {"wave": torch.from_numpy(wave), **{k: v[index] for k, v in self.table.meta.items()}}
        if key is not None:  # the batch's random key, for draws on the device (noise mixing)
            batch["key"] = torch.tensor([int(k) for k in key], dtype=torch.int64)
        return batch

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([item]).items()}

    def _read(self, row: int, start: int) -> np.ndarray:
        """The crop at ``start`` with ``context`` samples either side, reflected beyond the clip."""
        if not self.context:
            return self.table.crop(row, start, self.crop_samples)
        n, c = int(self.table.lengths[row]), self.context
        if n <= self.crop_samples:  # a clip shorter than the crop wraps around (AudioCache.crop)
            return _pad_time(self.table.crop(row, start, self.crop_samples), c, c)
        lo, hi = max(start - c, 0), min(start + self.crop_samples + c, n)
        return _pad_time(self.table.crop(row, lo, hi - lo), lo - start + c, start + self.crop_samples + c - hi)


def _pad_time(crop: np.ndarray, before: int, after: int) -> np.ndarray:
    """Reflect-pad the last (time) axis of a ``[samples]`` or ``[channels, samples]`` crop."""
    return np.pad(crop, [(0, 0)] * (crop.ndim - 1) + [(before, after)], mode="reflect")


def collate_crops(batch: dict | list[dict]) -> dict[str, torch.Tensor]:
    """Collate for :class:`CropDataset`: batches from ``__getitems__`` are already stacked; a list
    of items (a wrapper without ``__getitems__``, e.g. ``ConcatDataset``) is stacked here."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class ClipDataset(Dataset):
    """Whole clips (evaluation, embedding extraction); batch them with equal lengths."""

    def __init__(self, table: ClipTable, rows: np.ndarray) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray:
        return self.table.lengths[self.rows]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[item])
        wave = torch.from_numpy(np.array(self.table.waveform(row), dtype=np.int16))
        return {"wave": wave, **self.table.item_meta(row)}
