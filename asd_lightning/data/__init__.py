"""DCASE data layer: clip index, decoded audio cache, datasets, samplers, datamodules.

Names load lazily so that light users (``asd-evaluate``, the clip index) never import Lightning.
"""

from importlib import import_module

_EXPORTS = {
    "AudioCache": "audio_cache",
    "AudioDecodeError": "decode",
    "DecodeOptions": "decode",
    "ClipIndexError": "clip_index",
    "build_clip_index": "clip_index",
    "GroundTruthError": "ground_truth",
    "load_ground_truth": "ground_truth",
    "YearFacts": "years",
    "year_facts": "years",
    "DCASEDataModule": "datamodule",
    "DCASE2021DataModule": "datamodule",
    "DCASE2022DataModule": "datamodule",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
