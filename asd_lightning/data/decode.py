"""Decode one WAV file into int16 samples, checking the DCASE format (16 kHz, mono, 16-bit).

Policies (:class:`DecodeOptions`):

* a sample rate other than ``sample_rate`` is an error unless ``resample`` is set, in which
  case the clip is resampled with :func:`torchaudio.functional.resample`;
* a sample format other than 16-bit PCM is an error unless ``requantize`` is set (then the
  float samples are rounded to int16, clipping at full scale);
* multi-channel files keep the ``channel`` policy: ``"first"`` (default, the channel DCASE
  distributes), ``"mean"`` (average of all channels), ``"error"``, or a channel index (``0``,
  ``1``, ...; a file with fewer channels is an error). Named channels (DCASE 2026: ``near`` =
  0, ``far`` = 1) are chosen with the datamodule's ``channels``, which sets this index.

Every failure raises :class:`AudioDecodeError` with the file path in the message.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asd_lightning.utils.errors import OptionError


class AudioDecodeError(OptionError):
    """A WAV file is unreadable, empty, truncated or not in the expected format; when a decode
    option would accept it, ``key`` names that option (see :class:`OptionError`)."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to turn a WAV file into int16 samples at ``sample_rate``."""

    sample_rate: int = 16000
    channel: str | int = "first"
    resample: bool = False
    requantize: bool = False

    def __post_init__(self) -> None:
        if str(self.channel).isdigit():
            object.__setattr__(self, "channel", int(self.channel))
        elif self.channel not in ("first", "mean", "error"):
            raise ValueError(f"channel must be 'first', 'mean', 'error' or a channel index, got {self.channel!r}")

    @property
    def channel_index(self) -> int | None:
        """The channel kept: its index (``first``, and ``error`` on a mono file: 0), None for ``mean``."""
        return self.channel if isinstance(self.channel, int) else None if self.channel == "mean" else 0

    def to_dict(self) -> dict:
        """Plain dict, part of the cache key."""
        return asdict(self)


def check_wav_complete(path: Path) -> None:
    """Raise if a RIFF/WAVE file's data chunk promises more bytes than the file holds."""
    size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(f"{path}: file is empty (0 bytes)")
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
            return  # not a plain WAV: libsndfile decides
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                available = size - position - 8
                if header[:4] == b"RIFF" and chunk_size > available:
                    raise AudioDecodeError(
                        f"{path}: truncated WAV file: header promises {chunk_size} bytes of audio, "
                        f"the file holds {available}"
                    )
                return
            position += 8 + chunk_size + (chunk_size & 1)
    raise AudioDecodeError(f"{path}: WAV file has no data chunk")


def probe(path: str | Path) -> sf._SoundFileInfo:
    """Header information of an audio file, or :class:`AudioDecodeError` naming it."""
    path = Path(path)
    check_wav_complete(path)
    try:
        info = sf.info(str(path))
    except Exception as error:  # libsndfile raises several types for corrupt files
        raise AudioDecodeError(f"{path}: cannot be read as audio ({error})") from None
    if info.frames <= 0:
        raise AudioDecodeError(f"{path}: contains no audio samples")
    return info


def output_length(info: sf._SoundFileInfo, options: DecodeOptions) -> int:
    """Number of int16 samples :func:`decode` will return for a file with header ``info``."""
    if info.samplerate == options.sample_rate:
        return int(info.frames)
    return int(np.ceil(info.frames * options.sample_rate / info.samplerate))


def decode(path: str | Path, options: DecodeOptions = DecodeOptions(), info=None) -> np.ndarray:
    """Return the clip as a 1-D int16 array at ``options.sample_rate``."""
    path = Path(path)
    info = info or probe(path)
    if info.samplerate != options.sample_rate and not options.resample:
        raise AudioDecodeError(f"{path}: sample rate is {info.samplerate} Hz, expected {options.sample_rate} Hz",
                               key="resample", purpose="to convert it")
    if info.channels > 1 and options.channel == "error":
        raise AudioDecodeError(f"{path}: has {info.channels} channels, expected mono", key="channel",
                               value="first", purpose="to use its first channel")
    if isinstance(options.channel, int) and options.channel >= info.channels:
        raise AudioDecodeError(f"{path}: has {info.channels} channel(s), channel {options.channel} was asked for",
                               key="channel", value="first", purpose="to use its first channel")
    is_pcm16 = info.subtype == "PCM_16"
    if not is_pcm16 and not options.requantize:
        raise AudioDecodeError(f"{path}: sample format is {info.subtype}, expected 16-bit PCM",
                               key="requantize", purpose="to convert it")
    needs_float = not is_pcm16 or info.samplerate != options.sample_rate or options.channel == "mean"
    try:
        data, _ = sf.read(str(path), dtype="float32" if needs_float else "int16", always_2d=True)
    except Exception as error:
        raise AudioDecodeError(f"{path}: decoding failed ({error})") from None
    if data.shape[0] != info.frames:
        raise AudioDecodeError(f"{path}: truncated: header says {info.frames} frames, decoded {data.shape[0]}")
    samples = data.mean(axis=1) if options.channel == "mean" else data[:, options.channel_index]
    if not needs_float:
        return np.ascontiguousarray(samples)
    if info.samplerate != options.sample_rate:
        import torch
        import torchaudio.functional as AF

        samples = AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), info.samplerate,
                              options.sample_rate).numpy()
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
