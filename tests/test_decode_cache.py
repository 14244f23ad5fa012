"""Decoding checks and the memory-mapped int16 cache: reuse, invalidation, failure, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asd_lightning.data import audio_cache
from asd_lightning.data.audio_cache import AudioCache
from asd_lightning.data.decode import AudioDecodeError, DecodeOptions, decode
from conftest import write_wav


def test_decode_matches_soundfile_int16(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_wav(path, seconds=0.5)
    expected, _ = sf.read(path, dtype="int16")
    samples = decode(path)
    assert samples.dtype == np.int16 and np.array_equal(samples, expected)


def test_stereo_first_channel_mean_or_error(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    write_wav(path, seconds=0.2, channels=2)
    both, _ = sf.read(path, dtype="int16")
    assert np.array_equal(decode(path), both[:, 0])
    mean = decode(path, DecodeOptions(channel="mean"))
    assert np.abs(mean.astype(int) - both.astype(float).mean(axis=1)).max() <= 1
    with pytest.raises(AudioDecodeError, match=r"stereo\.wav: has 2 channels, expected mono"):
        decode(path, DecodeOptions(channel="error"))


def test_wrong_rate_rejected_or_resampled(tmp_path: Path) -> None:
    path = tmp_path / "cd.wav"
    write_wav(path, seconds=1.0, sr=44100, freq=1000.0)
    with pytest.raises(AudioDecodeError, match=r"cd\.wav: sample rate is 44100 Hz, expected 16000 Hz"):
        decode(path)
    samples = decode(path, DecodeOptions(resample=True))
    assert len(samples) == 16000
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    assert abs(np.argmax(spectrum) - 1000) <= 2  # the 1 kHz tone survives (1 Hz bins)


def test_non_16_bit_rejected_or_requantized(tmp_path: Path) -> None:
    path = tmp_path / "deep.wav"
    data = write_wav(path, seconds=0.1, subtype="PCM_24")
    with pytest.raises(AudioDecodeError, match=r"deep\.wav: sample format is PCM_24, expected 16-bit PCM"):
        decode(path)
    samples = decode(path, DecodeOptions(requantize=True))
    assert np.abs(samples / 32768.0 - data).max() < 1e-4


def test_empty_corrupt_truncated_and_silent_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty\.wav: file is empty"):
        decode(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioDecodeError, match=r"corrupt\.wav: cannot be read as audio"):
        decode(corrupt)
    truncated = tmp_path / "truncated.wav"
    write_wav(truncated, seconds=0.5)
    truncated.write_bytes(truncated.read_bytes()[:4000])
    with pytest.raises(AudioDecodeError, match=r"truncated\.wav: truncated WAV file"):
        decode(truncated)
    no_samples = tmp_path / "zero.wav"
    sf.write(no_samples, np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match=r"zero\.wav: contains no audio samples"):
        decode(no_samples)


def _files(tmp_path: Path, n: int = 4) -> list[Path]:
    paths = [tmp_path / "wavs" / f"clip_{i}.wav" for i in range(n)]
    for i, path in enumerate(paths):
        write_wav(path, seconds=0.25 + 0.05 * i, seed=i)
    return paths


def test_cache_round_trip_crop_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _files(tmp_path)
    cache = AudioCache.open_or_build(paths, tmp_path / "cache", name="fan", progress=False)
    for path in paths:
        expected, _ = sf.read(path, dtype="int16")
        assert np.array_equal(cache.waveform(cache.position(str(path))), expected)
    i = cache.position(str(paths[0]))
    assert np.array_equal(cache.crop(i, 100, 50), cache.waveform(i)[100:150])
    wrapped = cache.crop(i, 0, len(cache.waveform(i)) + 10)  # longer than the clip: wraps around
    assert np.array_equal(wrapped[-10:], cache.waveform(i)[:10])

    def fail(*args, **kwargs):
        raise AssertionError("a cached clip was decoded again")

    monkeypatch.setattr(audio_cache, "decode", fail)
    again = AudioCache.open_or_build(list(reversed(paths)), tmp_path / "cache", name="fan", progress=False)
    assert again.directory == cache.directory


def test_cache_invalidated_by_changed_or_added_file(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    first = AudioCache.open_or_build(paths, tmp_path / "cache", progress=False)
    write_wav(paths[1], seconds=0.4, seed=99)
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = AudioCache.open_or_build(paths, tmp_path / "cache", progress=False)
    assert second.directory != first.directory
    assert len(second.waveform(second.position(str(paths[1])))) == 6400
    third = AudioCache.open_or_build(paths[:3], tmp_path / "cache", progress=False)
    assert third.directory not in (first.directory, second.directory)


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    paths[2].write_bytes(paths[2].read_bytes()[:3000])  # truncated
    cache_dir = tmp_path / "cache"
    with pytest.raises(AudioDecodeError, match="clip_2.wav"):
        AudioCache.open_or_build(paths, cache_dir, progress=False)
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []


def _build_in_process(args: tuple[list[str], str]) -> tuple[str, float]:
    paths, cache_dir = args
    cache = AudioCache.open_or_build(paths, cache_dir, progress=False)
    meta = (cache.directory / "meta.json").read_text()
    return str(cache.directory), float(__import__("json").loads(meta)["created"])


def test_two_processes_build_one_cache(tmp_path: Path) -> None:
    paths = [str(p) for p in _files(tmp_path, n=12)]
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build_in_process, [(paths, str(tmp_path / "cache"))] * 2)
    assert results[0] == results[1]  # same folder, built once (same creation stamp)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    cache = AudioCache(results[0][0])
    expected, _ = sf.read(paths[5], dtype="int16")
    assert np.array_equal(cache.waveform(cache.position(paths[5])), expected)
