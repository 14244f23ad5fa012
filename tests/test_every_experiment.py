"""Every ``conf/experiment/**`` config trains once through ``asd-train``'s ``train(cfg)`` on a
tiny synthetic set and writes the official table; a pre-training writes the checkpoint that its
fine-tuning then starts from.

The experiments are found by globbing, so a new one is trained here without a line of this file:
its data is the tiny synthetic set of the DCASE year its config composes to (2021 with every
machine type for the two-BCE protocol's outlier exposure, 2026 stereo for near/far), and its tiny
sizes are read off the composed config (:func:`tiny_overrides`: the front end's mels, crops and
windows, one epoch of at most two batches, the width of each network component the config
names, a tiny random BEATs file for a pre-trained encoder). The experiment's own settings (its
method, loss, sampler, inlier model, aggregation, protocol) stay as they are.

Breaks it catches: an experiment that no longer trains and scores end to end, e.g. a model
config whose ``_target_`` names a moved class (tried: ``conf/model/vicreg_pretrain.yaml``'s
``_target_`` renamed → vicreg_pretrain and vicreg_finetune fail), a loss that raises or turns
NaN (tried: the AE baseline's loss times NaN → ae_baseline fails), a callback that writes no table, and a fine-tuning that no longer starts from its
pre-training (tried: ``SectionIDFinetune.setup`` not loading ``encoder_ckpt`` → dgmix_finetune
and vicreg_finetune fail on the encoder weights at the start of training).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from asd_lightning.synth import MACHINE_TYPES_BY_YEAR, SynthConfig, write_synthetic_dataset
from asd_lightning.train import train
from test_train import CONF, compose_train

EXPERIMENTS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                     for p in (CONF / "experiment").rglob("*.yaml"))

# experiment -> why it cannot train on a CPU (none today): reported as a skip with the reason
CANNOT_TRAIN_ON_CPU: dict[str, str] = {}

# the width of each network component, by the class its config names (a setting the config leaves
# null, e.g. the training-free recipe's embedding_dim, stays null)
COMPONENTS = {
    "TwoBranchEncoder": ["branch_dim=16", "spectrum_channels=16", "spectrogram_channels=[4,8,8,16]",
                         "spectrogram.n_fft=512", "spectrogram.hop_length=256", "spectrogram.n_mels=32"],
    "EfficientNetEmbedding": ["model_name=efficientnet_b0", "embedding_dim=16"],
    "PretrainedEncoder": ["embedding_dim=8", "lora.rank=2", "lora.alpha=4", "spec_augment.freq_width=4",
                          "spec_augment.time_width=4"],
}


class EncoderAtTrainStart(L.Callback):
    """Saves the method's encoder weights to ``path`` as training starts (after ``setup``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save({k: v.detach().clone() for k, v in pl_module.encoder.state_dict().items()}, self.path)


@functools.cache
def plain(experiment: str) -> DictConfig:
    """``asd-train experiment=<experiment>`` as composed without any other override."""
    return compose_train([f"experiment={experiment}"], Path("unused"))


def tiny_overrides(cfg: DictConfig, beats: Path) -> list[str]:
    """Overrides that shrink what ``cfg`` trains, nothing else."""
    data, model = cfg.data, cfg.model
    out = ["data.batch_size=8", "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "trainer.log_every_n_steps=1"]
    if data.features.get("kind") != "waveform":
        out += ["data.features.n_mels=32", "data.features.n_fft=512", "data.features.hop_length=256"]
    for key in ("train_crop", "test_segments"):
        section = data[key]
        if "frames" in section:
            out.append(f"data.{key}.frames=32")
        if "seconds" in section and not OmegaConf.is_interpolation(section, "seconds"):
            out.append(f"data.{key}.seconds=0.5")
        if "num" in section:
            out.append(f"data.{key}.num=2")
    for key, value in (("width_mult", 0.25), ("expander_width", 64), ("loss.subspace_dim", 4)):
        if OmegaConf.select(model, key) is not None:
            out.append(f"model.{key}={value}")
    encoder = model.get("encoder")
    if encoder is not None:
        name = encoder._target_.rsplit(".", 1)[-1]
        out += [f"model.encoder.{o}" for o in COMPONENTS.get(name, []) if OmegaConf.select(encoder, o.split("=")[0]) is not None]
        if "checkpoint" in encoder:
            out.append(f"model.encoder.checkpoint={beats}")
    if OmegaConf.select(cfg, "callbacks.inlier") is not None:
        # the configured inlier model's size, shrunk to the few fit clips (recorded in the run)
        out += ["callbacks.inlier.plots=false", "callbacks.inlier.model.size_guard=shrink"]
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """Shared by the module's items: a folder, a tiny random BEATs file in the official format,
    the tiny data sets (written on first use) with one decode cache, and the pre-trainings run."""
    from test_beats import TINY, random_tiny

    base = tmp_path_factory.mktemp("every_experiment")
    beats = base / "BEATs_tiny.pt"
    torch.save({"cfg": TINY, "model": random_tiny().state_dict()}, beats)
    return {"base": base, "beats": beats, "data": {}, "pretrained": {}}


def dataset(workspace: dict, data: DictConfig) -> Path:
    """The tiny synthetic set that ``data`` (a composed data config) asks for: its year, its machine
    types and its outlier machine types (every one of the year for ``all``); sections 00 and 01
    (00 from 2023 on), or 00 and the first evaluation section that its test_sections name (with
    the ground truth: the two-BCE protocol's IDs 03-05); 6 source clips per section (so that 10 %, one, is held out), 1 target clip, 2 test
    clips per section, domain and label, 1 s each."""
    year, outliers = int(data.year), data.get("outlier_machine_types") or []
    machines = tuple(dict.fromkeys([*data.machine_types, *(MACHINE_TYPES_BY_YEAR[year] if outliers == "all" else outliers)]))
    dev = (0, 1) if year <= 2022 else (0,)
    evaluation = tuple(s for s in data.get("test_sections") or () if s not in dev)[:1]
    key = (year, machines, evaluation)
    if key not in workspace["data"]:
        workspace["data"][key] = write_synthetic_dataset(
            workspace["base"] / f"synth{len(workspace['data'])}",
            SynthConfig(year=year, machine_types=machines, dev_sections=(0,) if evaluation else dev, eval_sections=evaluation,
                        source_train_clips=6, target_train_clips=1, test_clips=2, clip_seconds=1.0, difficulty="easy"))
    return workspace["data"][key]


def compose_tiny(experiment: str, workspace: dict, run: Path, extra: tuple[str, ...] = ()) -> DictConfig:
    """``experiment`` on the tiny set of its year at the tiny sizes, its outputs in ``run``."""
    first = plain(experiment)
    root = dataset(workspace, first.data)
    where = [f"data.root={root}", f"data.cache_dir={workspace['base'] / 'cache'}", "data.num_workers=0",
             "data.progress=false", "logger=csv", "trainer.accelerator=cpu", f"paths.log_dir={workspace['base'] / 'logs'}"]
    if (root / "ground_truth").is_dir():
        where.append(f"data.ground_truth={root / 'ground_truth'}")
    return compose_train([f"experiment={experiment}", *where, *tiny_overrides(first, workspace["beats"]), *extra], run)


def run_and_check(cfg: DictConfig, run: Path) -> dict:
    """Train ``cfg``; the run wrote the official table (score in [0, 1], as logged) and, unless
    the method is training-free, logged a finite training loss."""
    metrics = train(cfg)
    report = json.loads((run / "submission" / "scores.json").read_text())
    assert 0.0 <= report["official_score"] <= 1.0
    assert report["official_score"] == pytest.approx(metrics["test/official_score"], abs=1e-6)
    if not getattr(hydra.utils.get_class(cfg.model._target_), "training_free", False):
        assert math.isfinite(metrics["train/loss"])
    return metrics


def pre_train(experiment: str, workspace: dict) -> Path:
    """Run the pre-training ``experiment`` once per module; its checkpoint."""
    if experiment not in workspace["pretrained"]:
        run = workspace["base"] / experiment
        cfg = compose_tiny(experiment, workspace, run)
        run_and_check(cfg, run)  # its test step scores the pre-trained encoder
        ckpt = Path(cfg.pretrained_dir) / "last.ckpt"
        assert ckpt.is_file(), f"{experiment} wrote no {ckpt}"
        workspace["pretrained"][experiment] = ckpt
    return workspace["pretrained"][experiment]


def pre_training_of(cfg: DictConfig, workspace: dict) -> str:
    """The experiment whose checkpoint the fine-tuning ``cfg`` loads."""
    for other in EXPERIMENTS:
        if "pretrained_dir" in plain(other) and \
                Path(compose_tiny(other, workspace, workspace["base"]).pretrained_dir) / "last.ckpt" == Path(cfg.model.encoder_ckpt):
            return other
    raise AssertionError(f"no experiment writes the checkpoint {cfg.model.encoder_ckpt} that the fine-tuning loads")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_and_writes_the_official_table(experiment: str, workspace: dict, tmp_path: Path) -> None:
    if experiment in CANNOT_TRAIN_ON_CPU:
        pytest.skip(f"experiment={experiment} cannot train on a CPU: {CANNOT_TRAIN_ON_CPU[experiment]}")
    if "pretrained_dir" in plain(experiment):  # a pre-training: a checkpoint holding the encoder it trained
        state = torch.load(pre_train(experiment, workspace), weights_only=False)
        assert state["global_step"] > 0 and any(k.startswith("encoder.") for k in state["state_dict"])
        return
    run = tmp_path / "run"
    if not plain(experiment).model.get("encoder_ckpt"):
        run_and_check(compose_tiny(experiment, workspace, run), run)
        return
    # a fine-tuning: its pre-training first, then the encoder's weights as its training starts
    ckpt = pre_train(pre_training_of(compose_tiny(experiment, workspace, run), workspace), workspace)
    start = tmp_path / "encoder_at_start.pt"
    cfg = compose_tiny(experiment, workspace, run, (f"+callbacks.encoder_at_start._target_={__name__}.EncoderAtTrainStart",
                                                     f"+callbacks.encoder_at_start.path={start}"))
    assert Path(cfg.model.encoder_ckpt) == ckpt
    run_and_check(cfg, run)
    pretrained = {k.removeprefix("encoder."): v for k, v in torch.load(ckpt, weights_only=False)["state_dict"].items()
                  if k.startswith("encoder.")}
    at_start = torch.load(start)
    assert at_start.keys() == pretrained.keys()
    assert all(torch.equal(at_start[k], pretrained[k]) for k in pretrained)
