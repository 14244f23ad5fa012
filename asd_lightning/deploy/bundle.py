"""A model bundle: what scoring new recordings of one machine type needs, in one folder.

``bundle.pt`` holds the encoder (the trained method, pickled with its weights; a pre-trained
encoder's whole backbone and LoRA adapters too, so scoring needs no checkpoint file of the
user's: ``bundle.json`` names the file they came from and their size), the log-mel
front end and test segmentation, the decode checks, the machine's amplitude statistics, the
fitted inlier scorer of every section and the decision threshold; ``bundle.json`` summarises
them for people; ``config.yaml`` is the Hydra config of the run (when there was one). Loading
needs this package installed (and ``transformers`` / ``peft`` for such encoders), nothing else.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from asd_lightning.data.decode import DecodeOptions, decode
from asd_lightning.features.segments import min_clip_samples, normalize_int16, segment_clips
from asd_lightning.scoring.section_scorer import SectionScorer
from asd_lightning.utils.errors import OptionError, Spelling

BUNDLE_FILE = "bundle.pt"
FORMAT_VERSION = 3  # 2: SectionScorer.model_scale; 3: embedding standardisation and sizing records
_SECTION = re.compile(r"(?:section|id)_(\d{2})")


def section_from_name(path: str | Path) -> int | None:
    """The section (or 2020 machine ID) in a DCASE file name, None when it has none."""
    match = _SECTION.search(Path(path).name)
    return int(match.group(1)) if match else None


def pretrained_weights(encoder: torch.nn.Module) -> dict[str, Any] | None:
    """Where a pre-trained encoder's weights came from and that ``bundle.pt`` holds them (with
    their size): the bundle needs no file of the user's to score."""
    sources = [m.pretrained_source for m in encoder.modules() if getattr(m, "pretrained_source", None)]
    if not sources:
        return None
    size = sum(t.numel() * t.element_size() for t in [*encoder.parameters(), *encoder.buffers()])
    return {"source": sources[0], "held_in_bundle": True, "megabytes": round(size / 2 ** 20, 1)}


@dataclass
class ModelBundle:
    machine: str
    encoder: torch.nn.Module               # an ASDMethod (``segment_embeddings``)
    frontend: torch.nn.Module             # LogMel, or Waveform for encoders with their own features
    test_segments: dict[str, Any]
    decode_options: DecodeOptions
    scorers: dict[int, SectionScorer]      # section -> fitted scorer
    threshold: float
    amplitude: tuple[float, float] | None = None  # (mean, std) of the machine's training audio
    year: int = 2022
    config_yaml: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    # -- saving and loading --------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = dict(self.__dict__, encoder=copy.deepcopy(self.encoder).cpu().eval(),
                     frontend=copy.deepcopy(self.frontend).cpu(), format_version=FORMAT_VERSION)
        tmp = directory / f".{BUNDLE_FILE}.tmp"
        torch.save(state, tmp)
        tmp.replace(directory / BUNDLE_FILE)
        (directory / "bundle.json").write_text(json.dumps(self.summary(), indent=2) + "\n", encoding="utf-8")
        if self.config_yaml:
            (directory / "config.yaml").write_text(self.config_yaml, encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ModelBundle":
        path = Path(directory) / BUNDLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a model bundle folder")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(f"{path} holds a model that needs the Python package {error.name!r}: install it "
                                      "(pre-trained encoders: pip install 'asd-lightning[encoders]')") from None
        if state.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{path} was written by an incompatible version of asd-lightning")
        bundle = cls(**state)
        bundle.encoder.eval()
        return bundle

    def summary(self) -> dict[str, Any]:
        return {
            "machine": self.machine, "year": self.year, "sections": sorted(self.scorers),
            "encoder": f"{type(self.encoder).__module__}.{type(self.encoder).__qualname__}",
            "features": {k: getattr(self.frontend, k, None) for k in ("n_fft", "hop_length", "n_mels", "power", "log")},
            "test_segments": self.test_segments, "sample_rate": self.decode_options.sample_rate,
            "amplitude": self.amplitude, "threshold": self.threshold,
            "inlier": {s: {"models": [type(m).__name__ for m in sc.models], "aggregation": sc.aggregation,
                           "domains": sc.domains, "zscore": [sc.mean, sc.std], "standardized": sc.center is not None,
                           "sizing": [r.to_dict() for r in sc.sizing]} for s, sc in self.scorers.items()},
            **({"encoder_weights": weights} if (weights := pretrained_weights(self.encoder)) else {}),
            **self.info,
        }

    # -- scoring ---------------------------------------------------------------------
    def embed(self, wave: np.ndarray) -> np.ndarray:
        """One int16 clip → ``[S, D]`` segment embeddings, as the test loop computes them."""
        x = torch.from_numpy(np.ascontiguousarray(wave))[None]
        mean, std = (None, None) if self.amplitude is None else (torch.tensor([self.amplitude[0]]),
                                                                  torch.tensor([self.amplitude[1]]))
        with torch.inference_mode():
            features = segment_clips(normalize_int16(x, mean, std), self.frontend, self.test_segments,
                                     self.decode_options.sample_rate)
            return self.encoder.segment_embeddings(features)[0].numpy()

    def resolve_section(self, path: str | Path, section: int | None = None) -> int:
        section = section if section is not None else section_from_name(path)
        if section is None:
            if len(self.scorers) == 1:
                return next(iter(self.scorers))
            raise ValueError(f"{path}: no section_XX in the file name; pass --section "
                             f"(this bundle has sections {sorted(self.scorers)})")
        if section not in self.scorers:
            raise ValueError(f"{path}: section {section:02d} is not in this bundle (sections {sorted(self.scorers)})")
        return section

    def score_file(self, path: str | Path, section: int | None = None,
                   decode_options: DecodeOptions | None = None) -> tuple[int, float]:
        """(section, score) of one WAV file; a clear error naming the file when it cannot be scored."""
        used = self.resolve_section(path, section)
        wave = decode(path, decode_options or self.decode_options)
        rate = self.decode_options.sample_rate
        need = min_clip_samples(self.test_segments, self.frontend, rate)
        if len(wave) < need:
            raise ValueError(f"{path}: too short to score: {len(wave)} samples ({len(wave) / rate:.3f} s), "
                             f"one analysis window of this bundle needs {need} ({need / rate:.3f} s)")
        return used, float(self.scorers[used]([self.embed(wave)])[0])

    def score_files(self, paths: Sequence[str | Path], section: int | None = None,
                    decode_options: DecodeOptions | None = None, spelling: Spelling = "{key}={value}") -> pd.DataFrame:
        """Score WAV files: a table of file, section, score, decision (1 = anomalous) and error.

        A file that cannot be scored (unreadable, wrong format, too short, unknown section) does
        not stop the others: its row has no score and says why in ``error``. ``decode_options``
        replaces the bundle's (e.g. to resample); ``spelling`` spells the setting that would
        accept a file in decode errors (see :class:`~asd_lightning.utils.errors.OptionError`).
        """
        rows = []
        for path in paths:
            try:
                used, score = self.score_file(path, section, decode_options)
            except (ValueError, OSError) as error:
                message = " ".join(str(error.spelled(spelling) if isinstance(error, OptionError) else error).split())
                rows.append({"file": str(path), "error": message if str(path) in message else f"{path}: {message}"})
            else:
                rows.append({"file": str(path), "section": used, "score": score,
                             "decision": int(score > self.threshold), "error": ""})
        table = pd.DataFrame(rows, columns=["file", "section", "score", "decision", "error"])
        return table.astype({"section": "Int64", "score": float, "decision": "Int64"})
