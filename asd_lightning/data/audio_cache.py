"""Decode once, then stay fast: int16 waveforms of a clip list in one memory-mapped file.

A cache lives in ``<cache_dir>/<name>-<key>/`` with ``audio.int16`` (all clips back to back),
``offsets.npy`` (start, length per clip) and ``meta.json`` (files, decode options). The key
hashes every file's path, size and modification time plus the decode options, so an edited,
added or removed file gives a new cache. A cache is built in a temporary folder and renamed
into place only when complete; an exclusive lock file makes concurrent jobs (Hydra multirun,
DDP ranks, SLURM arrays) wait for the first builder instead of decoding twice. A failed build
leaves nothing behind; the temporary folder of a killed build (``.<name>-<key>.tmp-<host>-<pid>-*``)
is removed by the next build on the same machine once its process is gone. A build first checks
that the cache fits on its disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from asd_lightning.data.decode import DecodeOptions, decode, output_length, probe

FORMAT_VERSION = 1


def cache_key(paths: list[str], options: DecodeOptions) -> str:
    """Hash of the file list (paths, sizes, mtimes) and decode options."""
    digest = hashlib.sha256(json.dumps({"version": FORMAT_VERSION, "options": options.to_dict()}).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class AudioCache:
    """Read-only view of a built cache; the memory map opens lazily in each process."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta = json.loads((self.directory / "meta.json").read_text())
        self.files: list[str] = meta["files"]
        self.sample_rate: int = meta["options"]["sample_rate"]
        self.offsets = np.load(self.directory / "offsets.npy")
        self._position = {path: i for i, path in enumerate(self.files)}
        self._audio: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_audio"] = None  # never pickle the mapped samples into worker processes
        return state

    @property
    def audio(self) -> np.memmap:
        """All samples back to back (opened on first use)."""
        if self._audio is None:
            total = int(self.offsets[:, 1].sum()) if len(self.offsets) else 0
            self._audio = np.memmap(self.directory / "audio.int16", dtype=np.int16, mode="r", shape=(total,))
        return self._audio

    @property
    def lengths(self) -> np.ndarray:
        """Samples per clip."""
        return self.offsets[:, 1]

    def position(self, path: str) -> int:
        """Row of ``path`` in this cache."""
        return self._position[os.path.abspath(path)]

    def waveform(self, i: int) -> np.ndarray:
        """int16 samples of clip ``i`` (a view into the memory map)."""
        start, length = self.offsets[i]
        return self.audio[start:start + length]

    def crop(self, i: int, start: int, length: int) -> np.ndarray:
        """``length`` samples of clip ``i`` from ``start``; short clips wrap around."""
        clip_start, clip_length = self.offsets[i]
        if length <= clip_length - start:
            return self.audio[clip_start + start:clip_start + start + length]
        reps = int(np.ceil((start + length) / clip_length))
        return np.tile(self.waveform(i), reps)[start:start + length]

    @classmethod
    def open_or_build(
        cls,
        paths: Iterable[str | os.PathLike],
        cache_dir: str | Path,
        name: str = "clips",
        options: DecodeOptions = DecodeOptions(),
        num_workers: int | None = None,
        progress: bool = True,
    ) -> "AudioCache":
        """Open the cache of ``paths`` or decode them into a new one (see module docstring)."""
        files = sorted({os.path.abspath(p) for p in paths})
        if not files:
            raise ValueError(f"no audio files given for cache '{name}'")
        cache_dir = Path(cache_dir).expanduser()
        cache_dir.mkdir(parents=True, exist_ok=True)
        final = cache_dir / f"{name}-{cache_key(files, options)}"
        if (final / "meta.json").exists():
            return cls(final)
        with _exclusive_lock(cache_dir / f"{final.name}.lock"):
            if not (final / "meta.json").exists():
                shutil.rmtree(final, ignore_errors=True)  # never a complete cache: it has no meta.json
                remove_stale_temporaries(cache_dir)
                _build(files, final, options, num_workers, progress, name)
        return cls(final)


_TMP = re.compile(r"\..+\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)-[0-9a-f]{8}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(cache_dir: Path) -> list[Path]:
    """Remove the temporary folders of builds on this machine whose process is gone (killed
    mid-build); folders of other machines (a shared cache on a network disk) are left alone."""
    removed = []
    host = socket.gethostname()
    for path in Path(cache_dir).glob(".*.tmp-*"):
        match = _TMP.fullmatch(path.name)
        if match and path.is_dir() and match["host"] in (host, None) and not _alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class CacheSpaceError(OSError):
    """The disk of the cache folder has too little free space for a new cache."""


def check_free_space(directory: Path, needed: int, name: str) -> None:
    """Raise :class:`CacheSpaceError` unless ``needed`` bytes (plus 1 %) fit in ``directory``."""
    free = shutil.disk_usage(directory).free
    if needed * 1.01 > free:
        raise CacheSpaceError(
            f"{directory}: the decoded cache of '{name}' needs {_size(needed)}, only {_size(free)} are free there "
            "(free some, or move the cache to another disk: ASD_CACHE_DIR=<folder>)")


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _build(files: list[str], final: Path, options: DecodeOptions, num_workers: int | None,
           progress: bool, name: str) -> None:
    """Decode ``files`` into a temporary folder, then rename it to ``final``."""
    tmp = final.parent / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    workers = num_workers or min(8, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            infos = list(pool.map(probe, files))
            lengths = np.array([output_length(info, options) for info in infos], dtype=np.int64)
            check_free_space(tmp, int(lengths.sum()) * 2, name)  # int16; a full disk would crash the memmap writes
            offsets = np.stack([np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths], axis=1)
            audio = np.memmap(tmp / "audio.int16", dtype=np.int16, mode="w+", shape=(int(lengths.sum()),))

            def write(i: int) -> None:
                samples = decode(files[i], options, infos[i])
                if len(samples) != lengths[i]:
                    raise RuntimeError(f"{files[i]}: decoded {len(samples)} samples, expected {lengths[i]}")
                audio[offsets[i, 0]:offsets[i, 0] + lengths[i]] = samples

            bar = tqdm(total=len(files), desc=f"decoding {name}", unit="clip", disable=not progress)
            for _ in pool.map(write, range(len(files))):
                bar.update()
            bar.close()
        audio.flush()
        del audio
        np.save(tmp / "offsets.npy", offsets)
        meta = {"files": files, "options": options.to_dict(), "version": FORMAT_VERSION, "created": time.time()}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():
                raise
            shutil.rmtree(tmp)  # another process (without a shared lock) finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
