"""The one place pre-trained weights are found: a local file, a local folder, or a Hugging Face
repo id that is already in the local cache. Nothing is downloaded; what is missing stops the run
(``asd-train``'s pre-flight builds the model before training) with the override that supplies it.
"""

from __future__ import annotations

import os
from pathlib import Path

from asd_lightning.utils.errors import OptionError

SETTING = "model.encoder.checkpoint"


class MissingWeightsError(OptionError):
    """A pre-trained weight file or folder is not on this machine; names the setting that points to it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.args = (str(self),)  # Hydra's instantiate error quotes repr(): keep the setting in it


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the Hugging Face cache, None when not cached."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 (not cached, or not a repo id: all mean "not here")
        return None


def resolve_weights(checkpoint: str | os.PathLike | None, kind: str, where: str = SETTING,
                    hint: str = "") -> Path:
    """The local path of ``checkpoint``: a ``file`` (BEATs ``*.pt``) or a ``folder`` (a
    ``save_pretrained`` folder with ``config.json``, weights and the feature extractor's
    ``preprocessor_config.json``); for folders also a repo id found in the local Hugging Face cache.

    Raises :class:`MissingWeightsError` naming ``where=<path>`` and ``hint`` (where to get it)."""
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be file or folder, got {kind!r}")
    got = f" ({hint})" if hint else ""
    if checkpoint is None or str(checkpoint) in ("", "???"):
        raise MissingWeightsError(f"no pre-trained weights given{got}", key=where, value=f"<local {kind}>",
                                  purpose="before training")
    path = Path(str(checkpoint)).expanduser()
    if kind == "file":
        if path.is_file():
            return path
        problem = "is a folder, not a checkpoint file" if path.is_dir() else "not found"
        raise MissingWeightsError(f"pre-trained checkpoint {path} {problem}{got}", key=where,
                                  value="<path of the .pt file>")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingWeightsError(f"{path} has no config.json: not a save_pretrained folder{got}", key=where,
                                      value="<folder with config.json, the weights and preprocessor_config.json>")
        return path
    if not path.is_absolute() and str(checkpoint).count("/") == 1 and not path.suffix:
        cached = _cached_snapshot(str(checkpoint))
        if cached is not None:
            return cached
    raise MissingWeightsError(f"pre-trained model folder {path} not found, nor in the local Hugging Face cache "
                              f"(nothing is downloaded at run time){got}", key=where,
                              value="<folder saved with save_pretrained>")
