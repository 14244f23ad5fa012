"""`asd-eval`: test a checkpoint again (no training) with the scoring set up in ``conf/eval.yaml``.

Examples::

    asd-eval experiment=mobilenetv2_baseline data=synthetic ckpt_path=.../checkpoints/last.ckpt
    asd-eval -m experiment=mobilenetv2_baseline data=synthetic ckpt_path=... \\
        callbacks/inlier_model@callbacks.inlier.model=gmm callbacks.inlier.model.n_components=1,2,4,8
"""

from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import DictConfig

from asd_lightning.train import hydra_main, train
from asd_lightning.utils.errors import MissingFileError, UserError


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    """Check ``cfg.ckpt_path`` and run the test loop on it; returns the logged metrics."""
    if not cfg.get("ckpt_path"):
        raise UserError("asd-eval needs the checkpoint to score: ckpt_path=<run>/checkpoints/last.ckpt")
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        raise MissingFileError(f"checkpoint {ckpt} does not exist (set ckpt_path=...)")
    if cfg.get("train"):
        raise UserError("asd-eval never trains: leave train=false")
    # by design the training run's ModelCheckpoint is not rebuilt: its state is not wanted here
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided")
    return train(cfg)


def main() -> float | None:
    """Console entry point of ``asd-eval``."""
    return hydra_main(evaluate_checkpoint, "eval.yaml")


if __name__ == "__main__":
    main()
