"""Torch datasets of int16 waveform crops read from the audio caches.

Each item is a dict of tensors: ``wave`` (int16 samples), ``clip_id`` (row in the
datamodule's clip table), ``machine`` (machine-type class), ``section`` (section class among
the target machine's sections, -1 for outliers), ``domain`` (0 source, 1 target, -1 unknown),
``label`` (0 normal, 1 anomaly, -1 unknown) and ``is_target`` (1 for the target machine types,
0 for other machine types used as pseudo-anomalies). Float conversion, amplitude
normalisation and features happen later, on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from asd_lightning.data.audio_cache import AudioCache

META_COLUMNS = ("clip_id", "machine", "section", "domain", "label", "is_target")


class ClipTable:
    """Integer metadata of every clip plus where its samples live (cache, row)."""

    def __init__(self, meta: dict[str, np.ndarray], caches: list[AudioCache], cache_id: np.ndarray,
                 cache_row: np.ndarray) -> None:
        self.meta = {k: torch.from_numpy(np.array(v, dtype=np.int64)) for k, v in meta.items()}
        self.caches = caches
        self.cache_id = cache_id
        self.cache_row = cache_row
        self.lengths = np.array([caches[c].lengths[r] for c, r in zip(cache_id, cache_row)], dtype=np.int64)

    def item_meta(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.meta.items()}

    def crop(self, i: int, start: int, length: int) -> np.ndarray:
        return self.caches[self.cache_id[i]].crop(int(self.cache_row[i]), start, length)

    def waveform(self, i: int) -> np.ndarray:
        return self.caches[self.cache_id[i]].waveform(int(self.cache_row[i]))


class CropDataset(Dataset):
    """Fixed-length crops of the clips ``rows`` of ``table``.

    ``random=True`` draws a new crop position every time (training); otherwise the position
    is fixed per clip from ``seed`` (validation), so validation losses are comparable.
    """

    def __init__(self, table: ClipTable, rows: np.ndarray, crop_samples: int, random: bool = True,
                 seed: int = 0) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self.crop_samples = int(crop_samples)
        self.random = random
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def _start(self, item: int, row: int) -> int:
        room = max(int(self.table.lengths[row]) - self.crop_samples, 0)
        if room == 0:
            return 0
        if self.random:
            return int(torch.randint(0, room + 1, ()))  # torch's RNG is seeded per worker
        return int(np.random.default_rng((self.seed, item)).integers(0, room + 1))

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[item])
        wave = self.table.crop(row, self._start(item, row), self.crop_samples)
        return {"wave": torch.from_numpy(np.array(wave, dtype=np.int16)), **self.table.item_meta(row)}


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
