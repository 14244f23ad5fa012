"""Training-step throughput: model only vs the full step from the real datamodule.

For one experiment config (any method: ``--experiment two_bce/fan``, ``mobilenetv2_baseline``
...), on the synthetic dataset, time two Lightning training runs with the same model,
optimiser, precision and trainer:

* **model only**: every step gets the same random batch, already on the device, of the shapes
  the real datamodule produces (no loading, no decoding, no features): the rate the network
  and optimiser allow;
* **full step**: the real datamodule, i.e. int16 crops from the memory-mapped cache, the
  transfer, log-mel (and mixup) on the device, then the same network step; timed twice in
  the same process (``full_step``, then ``full_step_again``), since a first fit can run slower.

Both skip ``--warmup`` steps (cuDNN autotuning, worker start-up) before timing ``--steps``
steps, synchronising the GPU at both ends. It prints both rates (samples/s) and their ratio
(goal ≥ 0.85) and the estimated time of the paper's run: ``--epochs`` (default: the
experiment's ``trainer.max_epochs``) epochs over ``--epoch-clips`` clips of
``--epoch-clip-seconds`` s, an epoch counted as the experiment's datamodule defines it (every
window of every clip for ``per_clip: all``; both halves of pair and 1:1 batches).

    .venv/bin/python benchmarks/train_throughput.py --experiment two_bce/fan --out benchmarks/train_throughput_two_bce.json
    .venv/bin/python benchmarks/train_throughput.py --quick      # CPU smoke run, seconds

Speed targets live here, never in the tests (tests/test_benchmark_smoke.py only runs --quick).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 0.85
QUICK_OVERRIDES = {  # tiny inputs for the CPU smoke run: crops in seconds (two-BCE) or windows in frames
    "seconds": ["data.features.n_mels=32", "data.features.n_fft=512", "data.features.hop_length=256",
                "data.train_crop.seconds=0.5", "model.encoder.model_name=efficientnet_b0"],
    "frames": ["data.features.n_mels=64", "data.features.n_fft=512", "data.features.hop_length=256",
               "data.train_crop.frames=32"],
}


class StepTimer(L.Callback):
    """Wall time of the training steps after the first ``warmup`` (GPU synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.seconds = float("nan")
        self.steps = 0
        self.samples = 0
        self.losses: list[torch.Tensor] = []  # the timed steps' losses, detached (read once at the end: no syncs)
        self.ends: list[float] = []  # wall clock at each timed step's end, unsynchronised (the CPU's pace)
        self.peak_memory_mib: float | None = None

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self.steps += 1
            self.samples += len(batch["features"])
            self.ends.append(time.perf_counter())
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if isinstance(loss, torch.Tensor):
                self.losses.append(loss.detach().float())

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start
        if pl_module.device.type == "cuda":
            self.peak_memory_mib = torch.cuda.max_memory_allocated(pl_module.device) / 2**20

    def pace(self) -> dict[str, float] | None:
        """Mean seconds per step over the first and the last third of the timed steps: a loader
        that falls behind shows as a slower last third (its prefetched batches used up)."""
        gaps = np.diff([self.start, *self.ends]) if self.start is not None and self.ends else np.array([])
        if len(gaps) < 3:
            return None
        third = len(gaps) // 3
        return {"first_third": float(gaps[:third].mean()), "last_third": float(gaps[-third:].mean())}

    def loss_summary(self, last: int = 5) -> dict[str, float] | None:
        """The last timed step's loss and the mean of the last ``last`` (None when the method returns none)."""
        if not self.losses:
            return None
        values = torch.stack(self.losses).cpu()
        return {"last": float(values[-1]), f"mean_last_{last}": float(values[-last:].mean()), "steps": len(values)}


class FixedBatches(L.LightningDataModule):
    """Serves one random batch, kept on the device, ``steps`` times; everything else (the
    feature front end for wave mixup, the section classes) is the real datamodule's."""

    def __init__(self, real, example: dict[str, torch.Tensor], steps: int) -> None:
        super().__init__()
        self.real, self.steps = real, steps
        self.example = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in example.items()}
        self._on_device: dict[str, torch.Tensor] | None = None

    def __getattr__(self, name: str) -> Any:  # featurize, section_classes, label_classes, ... of the real datamodule
        if name in ("real", "example", "steps", "_on_device"):
            raise AttributeError(name)
        return getattr(self.real, name)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int) -> dict[str, torch.Tensor]:
        if self._on_device is None:
            self._on_device = {k: v.to(device) for k, v in self.example.items()}
        return self._on_device


def compose(experiment: str, root: Path, cache: Path, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from asd_lightning.utils import resolvers  # noqa: F401

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train.yaml", overrides=[
            f"experiment={experiment}", "data=synthetic", "protocol=official", f"data.root={root}", f"data.cache_dir={cache}",
            "logger=none", *overrides])  # cfg.callbacks are not instantiated: only the timer runs


def timed_fit(cfg, datamodule, steps: int, warmup: int, accelerator: str, precision: str,
              callbacks: list | tuple = ()) -> StepTimer:
    import hydra

    L.seed_everything(0, workers=True)
    if accelerator == "gpu":  # each run's own peak (StepTimer reads it at the end)
        torch.cuda.reset_peak_memory_stats()
    model = hydra.utils.instantiate(cfg.model)
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=warmup + steps,
                        max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer, *callbacks], use_distributed_sampler=False)
    trainer.fit(model, datamodule=datamodule)
    if timer.steps < steps:
        raise RuntimeError(f"only {timer.steps} timed steps ran (wanted {steps}): the training set is too small "
                           "for warmup + steps batches; raise --clips-per-section")
    return timer


def prepare(args: argparse.Namespace) -> tuple[Any, Any, dict[str, torch.Tensor], str, str]:
    """The composed config, the set-up datamodule (synthetic data written, cache built), one real
    batch after the device step (on the CPU), the accelerator and the precision of ``args``."""
    import hydra

    gpu = torch.cuda.is_available() and not args.no_gpu
    accelerator, precision = ("gpu", args.precision) if gpu else ("cpu", "32-true")
    if gpu:
        torch.backends.cudnn.benchmark = True
    work = Path(args.workdir or tempfile.mkdtemp(prefix="asd-throughput-"))
    others = [m for m in ("fan", "gearbox", "valve") if m != args.machine][:2]  # outliers for outlier exposure
    synthetic = [f"+data.synthetic.machine_types=[{args.machine},{others[0]},{others[1]}]",
                 "+data.synthetic.target_train_clips=0",
                 "+data.synthetic.test_clips=1", f"+data.synthetic.clip_seconds={args.seconds}",
                 "+data.synthetic.eval_sections=[]"]
    overrides = [f"data.machine_types=[{args.machine}]", f"data.batch_size={args.batch_size}", f"data.num_workers={args.workers}",
                 f"data.pin_memory={str(gpu).lower()}", "data.progress=false", *synthetic, *args.override]
    cfg = compose(args.experiment, work / "data", work / "cache", overrides)
    if args.quick:
        crop = "frames" if "frames" in cfg.data.train_crop else "seconds"
        overrides = overrides + QUICK_OVERRIDES[crop]
    if args.clips_per_section is None:  # enough items (3 sections) for warmup + steps batches, at least 8 clips
        probe = hydra.utils.instantiate(compose(args.experiment, work / "data", work / "cache", overrides).data)
        needed = (args.warmup + args.steps + 2) * first_items_per_batch(probe)
        per_section = 3 * items_per_clip(probe, args.seconds) * (1 - probe.val_fraction)  # validation clips held out
        args.clips_per_section = max(8, int(np.ceil(needed / per_section)))
    overrides = overrides + [f"+data.synthetic.source_train_clips={args.clips_per_section}"]
    cfg = compose(args.experiment, work / "data", work / "cache", overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    example = next(iter(datamodule.train_dataloader()))
    device = torch.device("cuda" if gpu else "cpu")
    example = datamodule.on_after_batch_transfer({k: v.to(device) for k, v in example.items()}, 0)
    example = {k: v.cpu() for k, v in example.items() if isinstance(v, torch.Tensor)}
    return cfg, datamodule, example, accelerator, precision


def run(args: argparse.Namespace, callbacks: list | tuple = ()) -> dict[str, Any]:
    """Both timed runs of ``args``; ``callbacks`` join the full-step run (e.g. a profiler)."""
    cfg, datamodule, example, accelerator, precision = prepare(args)
    gpu = accelerator == "gpu"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        model_only = timed_fit(cfg, FixedBatches(datamodule, example, args.warmup + args.steps), args.steps,
                               args.warmup, accelerator, precision)
        full = timed_fit(cfg, datamodule, args.steps, args.warmup, accelerator, precision, callbacks)
        # the same full run again in this process: on one H200 a first fit ran at 0.55 of the
        # model-only rate where later fits with the same settings reached 0.94 (cause open)
        again = timed_fit(cfg, datamodule, args.steps, args.warmup, accelerator, precision)
    runs = (("model_only", model_only), ("full_step", full), ("full_step_again", again))
    rates = {name: t.samples / t.seconds for name, t in runs}
    ratio = rates["full_step"] / rates["model_only"]
    epochs = args.epochs or int(cfg.trainer.max_epochs)
    epoch_samples = samples_per_epoch(datamodule, args.epoch_clips, args.epoch_clip_seconds)
    epoch_seconds = epoch_samples / rates["full_step"]
    return {
        "experiment": args.experiment,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "precision": precision,
        "batch_shape": list(example["features"].shape),
        "samples_per_second": rates,
        "ratio_full_to_model_only": ratio,
        "ratio_again_to_model_only": rates["full_step_again"] / rates["model_only"],
        "seconds_per_step": {name: t.pace() for name, t in runs},
        "peak_memory_mib": {"model_only": model_only.peak_memory_mib, "full_step": full.peak_memory_mib},
        "loss": {"model_only": model_only.loss_summary(), "full_step": full.loss_summary()},
        "loader": {"num_workers": datamodule.num_workers, "pin_memory": datamodule.pin_memory},
        "goal_ratio": GOAL_RATIO,
        "epochs": epochs,
        "samples_per_epoch": epoch_samples,
        "estimated_minutes": {"per_epoch": epoch_seconds / 60, f"{epochs}_epochs": epoch_seconds * epochs / 60},
    }


def items_per_clip(datamodule, clip_seconds: float) -> int:
    """Training items one clip of ``clip_seconds`` gives per epoch (every window for ``per_clip: all``)."""
    per_clip = datamodule.train_crop.get("per_clip", 1)
    if per_clip == "all":
        length = int(round(clip_seconds * datamodule.decode_options.sample_rate))
        return max(0, (length - datamodule.crop_samples) // datamodule.crop_hop_samples) + 1
    return int(per_clip)


def first_items_per_batch(datamodule) -> int:
    """Items of the epoch's own clips per batch: the first partners of a pair batch, the target
    half of a 1:1 batch, else the whole batch."""
    return datamodule.batch_size // 2 if datamodule.sampler == "target_vs_outliers" else datamodule.batch_size


def samples_per_epoch(datamodule, clips: int, clip_seconds: float) -> int:
    """Training samples (rows of the batches) in one epoch of ``clips`` clips of ``clip_seconds``
    as ``datamodule`` defines an epoch: items per clip (every window for ``per_clip: all``),
    doubled for pair and 1:1 batches (the partners / other machines' clips ride along)."""
    doubled = 2 if datamodule.sampler in ("same_machine_pairs", "target_vs_outliers") else 1
    return int(clips) * items_per_clip(datamodule, clip_seconds) * doubled


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="two_bce", help="experiment config to time (e.g. two_bce/fan)")
    p.add_argument("--machine", default="fan", help="target machine type (a 2022 type; the synthetic data hold "
                   "it and two others)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 (--quick: 8); pairs for DG-Mix "
                   "pre-training (2 windows each), target + other clips for two-BCE")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10; --quick 1)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--precision", default="bf16-mixed", help="GPU precision (CPU runs 32-true)")
    p.add_argument("--clips-per-section", type=int, default=None, help="synthetic training clips per section")
    p.add_argument("--seconds", type=float, default=None, help="synthetic clip length (default 10; --quick 1)")
    p.add_argument("--epoch-clips", type=int, default=6000, help="training clips of one machine type for the "
                   "time estimate (DCASE: 6 sections x 1000)")
    p.add_argument("--epoch-clip-seconds", type=float, default=10.0, help="their length in seconds")
    p.add_argument("--epochs", type=int, default=None, help="epochs for the time estimate (default: the "
                   "experiment's trainer.max_epochs, e.g. 300 for two-BCE, 100 for DG-Mix)")
    p.add_argument("--workdir", default=None, help="where the synthetic data and cache go (kept)")
    p.add_argument("--override", nargs="*", default=[], help="more Hydra overrides")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(batch_size=8 if quick else 128, steps=3 if quick else 50, warmup=1 if quick else 10,
                    seconds=1.0 if quick else 10.0)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if quick:
        args.workers, args.no_gpu = 0, True
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(args)
    rates = results["samples_per_second"]
    print(f"{results['experiment']} on {results['device']} ({results['precision']}), batch {results['batch_shape']}")
    print(f"  model only : {rates['model_only']:10.1f} samples/s")
    print(f"  full step  : {rates['full_step']:10.1f} samples/s")
    print(f"  again      : {rates['full_step_again']:10.1f} samples/s (the full step, a second fit in this process)")
    print(f"  ratio      : {results['ratio_full_to_model_only']:.3f}, again {results['ratio_again_to_model_only']:.3f} "
          f"(goal >= {GOAL_RATIO})")
    minutes, epochs = results["estimated_minutes"], results["epochs"]
    print(f"  estimate   : {minutes['per_epoch']:.2f} min per epoch of {args.epoch_clips} clips "
          f"({results['samples_per_epoch']} samples), {minutes[f'{epochs}_epochs']:.1f} min for {epochs} epochs")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
