"""One GPU check: environment, training throughput per paper experiment, a profile of the
steps, and a method comparison at a fixed GPU budget. Run through ``benchmarks/gpu_check.sh``.

1. **Environment**: device, torch / CUDA / cuDNN / Lightning / timm versions, bf16 support.
2. **Throughput** (``benchmarks/train_throughput.py``) of ``mobilenetv2_baseline``,
   ``dgmix_pretrain``, ``dgmix_finetune`` and ``two_bce/fan`` at their paper batch sizes:
   model-only and full-step samples/s, their ratio (goal ≥ 0.85), and the implied time of the
   paper's run (its epochs over one machine type's 6000 clips of 10 s, an epoch counted as the
   datamodule defines it: every window for DG-Mix, both halves of pair and 1:1 batches).
3. **Profile**: ``torch.profiler`` over a few full steps of each experiment: the top operators
   and the share of the steps' wall time the GPU was busy (idle gaps = CPU-bound stages).
4. **GPU-budget comparison** on a synthetic set sized for the GPU (several thousand 10 s
   clips of fan, gearbox and valve): the MobileNetV2 baseline, DG-Mix from scratch and
   two-BCE, one model per machine type, each method trained for ``--minutes`` in all (epochs
   sized from its measured throughput, ``trainer.max_time`` as a cap), then scored: official
   score, AUC source / target and pAUC.
5. **Pre-trained encoder step** (``benchmarks/encoder_step.py``): a BEATs-size (90 M) training
   step's clips/s and peak memory with LoRA, full fine-tuning and gradient checkpointing.

Everything goes to ``--out`` (``$OUT`` when set): ``gpu_check.json``, ``gpu_check.md`` and one
profiler trace (``trace_dgmix_pretrain.json.gz``), at most 8 files. ``--quick`` runs every part
at tiny sizes on the CPU in about a minute (tests/test_benchmark_smoke.py runs it).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {  # experiment → its paper batch size (pairs for DG-Mix pre-training; target + other clips for
    # two-BCE) and overrides (the fine-tuning is timed from a fresh encoder: no pre-training checkpoint needed)
    "mobilenetv2_baseline": (32, []),
    "dgmix_pretrain": (1024, []),
    "dgmix_finetune": (64, ["model.encoder_ckpt=null"]),
    "two_bce/fan": (32, []),
}
BUDGET_METHODS = {  # method → (experiment, extra overrides); {machine} = the machine type trained
    "mobilenetv2_baseline": ("mobilenetv2_baseline", ["callbacks=inlier"]),
    "dgmix_scratch": ("dgmix_scratch", []),
    "two_bce": ("two_bce/{machine}", ["protocol=official"]),  # its Table I settings, DCASE 2022 layout
}
BUDGET_MACHINES = ("fan", "gearbox", "valve")
QUICK_TEST_SEGMENTS = {  # added to train_throughput's quick overrides for the budget runs' test step
    "frames": ["data.test_segments.frames=32"],
    "seconds": ["data.test_segments.seconds=0.5", "data.test_segments.num=3"],
}


def load_throughput():
    spec = importlib.util.spec_from_file_location("asd_train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environment() -> dict[str, Any]:
    import lightning
    import timm
    import torch
    import torchaudio

    gpu = torch.cuda.is_available()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": torch.cuda.get_device_name(0) if gpu else f"cpu ({os.cpu_count()} cores)",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if gpu else None,
        "bf16": bool(gpu and torch.cuda.is_bf16_supported()),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpu else None, "torchaudio": torchaudio.__version__,
        "lightning": lightning.__version__, "timm": timm.__version__, "cpu_count": os.cpu_count(),
    }


def throughput(bench, experiment: str, batch: int, overrides: list[str], work: Path, quick: bool,
               precision: str, trace: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train_throughput`` of ``experiment`` and a profile of a few full steps late in its warm-up
    (after cuDNN's autotuning, before the timed steps; in ``--quick`` within them)."""
    argv = ["--experiment", experiment, "--batch-size", str(batch if not quick else 8), "--workdir", str(work),
            "--precision", precision, "--override", *overrides]
    args = bench.parse_args(argv + (["--quick"] if quick else ["--steps", "30", "--warmup", "12"]))
    start = 1 if quick else args.warmup - 6
    profiler = StepProfiler(start, 2 if quick else 5, trace, gpu=not quick)
    return bench.run(args, callbacks=[profiler.callback]), profiler.result


class StepProfiler:
    """``torch.profiler`` over full training steps ``start .. start + steps``: the top operators and
    the GPU-busy share of the steps' wall time; optionally a chrome trace."""

    def __init__(self, start: int, steps: int, trace: Path | None, gpu: bool) -> None:
        import lightning as L
        import torch

        outer = self

        class _Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if batch_idx == start:
                    outer.begin()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                if batch_idx == start + steps - 1:
                    outer.end()

        self.callback = _Callback()
        self.trace = trace
        self.torch = torch
        self.gpu = gpu
        self.result: dict[str, Any] = {}
        self.prof = None

    def begin(self) -> None:
        torch = self.torch
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.gpu:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        self.prof = torch.profiler.profile(activities=activities)
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def end(self) -> None:
        torch = self.torch
        if self.prof is None:
            return
        if self.gpu:
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        events = self.prof.key_averages()
        gpu = self.gpu
        key = "self_device_time_total" if gpu else "self_cpu_time_total"
        top = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:12]
        busy_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events) if gpu else None
        self.result = {
            "wall_seconds": wall,
            "gpu_busy_fraction": (busy_us / 1e6 / wall) if gpu and wall > 0 else None,
            "top_ops": [{"name": e.key, "ms": getattr(e, key, 0.0) / 1e3, "calls": e.count} for e in top],
        }
        if self.trace is not None:
            raw = self.trace.with_suffix("")
            self.prof.export_chrome_trace(str(raw))
            with open(raw, "rb") as src, gzip.open(self.trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw.unlink()


def budget_dataset(work: Path, quick: bool) -> Path:
    from asd_lightning.synth import SynthConfig, write_synthetic_dataset

    if quick:
        config = SynthConfig(machine_types=BUDGET_MACHINES, dev_sections=(0, 1), eval_sections=(),
                             source_train_clips=6, target_train_clips=2, test_clips=2, clip_seconds=1.0)
    else:  # 3 types x 3 sections x (300 + 10) training clips and 100 test clips: 3690 clips of 10 s
        config = SynthConfig(machine_types=BUDGET_MACHINES, dev_sections=(0, 1, 2), eval_sections=(),
                             source_train_clips=300, target_train_clips=10, test_clips=25, clip_seconds=10.0)
    return write_synthetic_dataset(work / "budget_data", config, workers=min(16, os.cpu_count() or 1))


def max_time(seconds: float) -> str:
    """Lightning's ``max_time`` string ``DD:HH:MM:SS`` for ``seconds`` (rounded up)."""
    total = int(math.ceil(seconds))
    return f"{total // 86400:02d}:{total // 3600 % 24:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


def budget_run(method: str, machine: str, root: Path, work: Path, seconds: float, rate: float | None,
               quick: bool, precision: str) -> dict[str, Any]:
    """Train ``method`` on ``machine`` for about ``seconds`` and score it (``train`` + ``test``)."""
    import hydra
    import torch

    from asd_lightning.train import train
    from asd_lightning.utils.compose import compose_config

    experiment, extra = BUDGET_METHODS[method]
    experiment = experiment.format(machine=machine)
    gpu = torch.cuda.is_available() and not quick
    overrides = [f"experiment={experiment}", "data=synthetic", "data.synthetic=null",  # read the set written here
                 f"data.root={root}", f"data.machine_types=[{machine}]",
                 f"data.cache_dir={work / 'cache'}", "data.progress=false", f"data.num_workers={0 if quick else 8}",
                 f"data.pin_memory={str(gpu).lower()}", "logger=none", "callbacks.inlier.plots=false",
                 "callbacks.inlier.bundle_dir=null", f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
                 f"trainer.precision={precision if gpu else '32-true'}",
                 f"+trainer.max_time='{max_time(seconds)}'", *extra]
    if quick:
        crop = "seconds" if experiment.startswith("two_bce") else "frames"
        overrides += load_throughput().QUICK_OVERRIDES[crop] + QUICK_TEST_SEGMENTS[crop] + ["data.batch_size=8"]
        if crop == "seconds":  # a tiny fit set: one Gaussian
            overrides.append("callbacks.inlier.model.n_components=1")
    run_dir = work / "runs" / f"{method}_{machine}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a kept --workdir must not mix in an earlier run's files
    cfg = compose_config(overrides, run_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    clips = len(datamodule.rows("train", targets_only=True))
    epoch_samples = load_throughput().samples_per_epoch(datamodule, clips, float(datamodule.table.lengths.max()) / 16000)
    epochs = 1 if quick or not rate else max(1, int(seconds * rate / epoch_samples))
    cfg.trainer.max_epochs = epochs
    t0 = time.perf_counter()
    metrics = train(cfg)
    return {"epochs": epochs, "seconds": time.perf_counter() - t0,
            "official_score": metrics.get("test/official_score"),
            "auc_source": metrics.get("test/auc_source_hmean"), "auc_target": metrics.get("test/auc_target_hmean"),
            "pauc": metrics.get("test/pauc_hmean")}


def combine(runs: dict[str, dict[str, Any]], root: Path) -> dict[str, Any]:
    """One official table over the machine types of a method (their submission CSVs together)."""
    import pandas as pd

    from asd_lightning.data.clip_index import build_clip_index
    from asd_lightning.metrics import evaluate, read_submission
    from asd_lightning.metrics.cli import join_scores

    scores = pd.concat([read_submission(Path(run["run_dir"]) / "submission", 2022) for run in runs.values()],
                       ignore_index=True)
    clips = build_clip_index(root, 2022, machine_types=list(runs), splits=["test"])
    report = evaluate(join_scores(clips, scores, 2022), 2022)
    return {"official_score": report.official_score, "auc_source": report.overall["auc_source_hmean"],
            "auc_target": report.overall["auc_target_hmean"], "pauc": report.overall["pauc_hmean"]}


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"# GPU check ({'quick, CPU' if results['quick'] else env['device']})", "",
             f"{env['date']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Lightning "
             f"{env['lightning']}, timm {env['timm']}; precision {results['precision']}.", "",
             "## Throughput (samples/s) and the paper's run", "",
             "| experiment | batch | model only | full step | ratio (goal ≥ 0.85) | epochs | samples/epoch | paper run (min) | GPU busy in steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["throughput"].items():
        rates, minutes = row["samples_per_second"], row["estimated_minutes"]
        busy = results["profile"].get(name, {}).get("gpu_busy_fraction")
        busy = "-" if busy is None else f"{100 * busy:.0f} %"
        paper_minutes = minutes[f"{row['epochs']}_epochs"]
        lines.append(f"| {name} | {row['batch_shape'][0]} | {rates['model_only']:.0f} | {rates['full_step']:.0f} | "
                     f"{row['ratio_full_to_model_only']:.2f} | {row['epochs']} | {row['samples_per_epoch']} | "
                     f"{paper_minutes:.1f} | {busy} |")
    lines += ["", f"## Methods at a fixed budget ({results['budget']['minutes']} min each, "
              f"{results['budget']['clips']} clips, one model per machine type)", "",
              "| method | official | AUC source | AUC target | pAUC | epochs per machine type | seconds |",
              "|---|---|---|---|---|---|---|"]
    for method, row in results["budget"]["methods"].items():
        epochs = ", ".join(str(r["epochs"]) for r in row["runs"].values())
        seconds = sum(r["seconds"] for r in row["runs"].values())
        lines.append(f"| {method} | {100 * row['official_score']:.2f} | {100 * row['auc_source']:.2f} | "
                     f"{100 * row['auc_target']:.2f} | {100 * row['pauc']:.2f} | {epochs} | {seconds:.0f} |")
    lines += ["", "## Top operators in a few full steps", ""]
    for name, prof in results["profile"].items():
        ops = "; ".join(f"{o['name']} {o['ms']:.1f} ms" for o in prof.get("top_ops", [])[:6])
        lines.append(f"- {name}: {ops}")
    rows = results.get("encoder_step", {}).get("results", [])
    if rows:
        lines += ["", "## BEATs-size training step (10 s clips)", "", "| device | mode | batch | clips/s | peak MiB |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['mode']} | {r['batch']} | {r['clips_per_second']:.2f} | {r['peak_memory_mib']:.0f} |"
                  for r in rows]
    return "\n".join(lines) + "\n"


def encoder_step(out: Path, quick: bool) -> dict[str, Any]:
    """A BEATs-size encoder's training step (LoRA, full, full with gradient checkpointing):
    clips/s and peak memory on the CPU and the GPU (``benchmarks/encoder_step.py``)."""
    spec = importlib.util.spec_from_file_location("asd_encoder_step", ROOT / "benchmarks" / "encoder_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(["--out", str(out)] + (["--quick"] if quick else []))
    except Exception as error:  # noqa: BLE001 (one part failing must not lose the others' results)
        print(f"encoder step failed: {error}", file=sys.stderr, flush=True)
        return {"failed": str(error)[-2000:]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "gpu_check"),
                   help="output folder (default $OUT, else benchmarks/gpu_check)")
    p.add_argument("--minutes", type=float, default=1.5, help="training budget per method (all machine types)")
    p.add_argument("--precision", default="bf16-mixed", help="GPU precision")
    p.add_argument("--workdir", default=None, help="data and runs (default: a temporary folder, removed)")
    p.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (a smoke run)")
    args = p.parse_args(argv)
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="asd-gpu-check-"))
    quick = args.quick or not torch.cuda.is_available()  # --quick is the CPU mode
    precision = "32-true" if quick else args.precision
    t0 = time.perf_counter()
    results: dict[str, Any] = {"quick": quick, "precision": precision, "environment": environment(),
                               "throughput": {}, "profile": {}}
    print(json.dumps(results["environment"], indent=2), flush=True)
    bench = load_throughput()
    for experiment, (batch, extra) in EXPERIMENTS.items():
        trace = out / "trace_dgmix_pretrain.json.gz" if experiment == "dgmix_pretrain" else None
        row, prof = throughput(bench, experiment, batch, extra, work / "throughput", quick, precision, trace)
        results["throughput"][experiment], results["profile"][experiment] = row, prof
        print(f"{experiment}: {row['samples_per_second']} ratio {row['ratio_full_to_model_only']:.2f}", flush=True)
    results["encoder_step"] = encoder_step(out, quick)
    root = budget_dataset(work, quick)
    seconds = 60 * args.minutes / len(BUDGET_MACHINES)
    rates = {"mobilenetv2_baseline": "mobilenetv2_baseline", "dgmix_scratch": "dgmix_finetune", "two_bce": "two_bce/fan"}
    results["budget"] = {"minutes": args.minutes, "clips": sum(1 for _ in root.rglob("*.wav")), "methods": {}}
    for method in BUDGET_METHODS:
        rate = results["throughput"][rates[method]]["samples_per_second"]["full_step"]
        runs = {}
        for machine in BUDGET_MACHINES:
            runs[machine] = budget_run(method, machine, root, work, seconds, rate, quick, precision)
            runs[machine]["run_dir"] = str(work / "runs" / f"{method}_{machine}")
        results["budget"]["methods"][method] = {**combine(runs, root), "runs": runs}
        print(f"{method}: {results['budget']['methods'][method]['official_score']:.4f}", flush=True)
    results["seconds"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
