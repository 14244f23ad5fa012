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

Also, per experiment, the peak GPU memory of both runs at the paper's batch size; **bf16-mixed
against fp32** for DG-Mix pre-training (rates, and the loss after the same steps on the same
batches); and a **loader sweep** (``data.num_workers`` × ``data.pin_memory``) on the experiment
whose full step lags its model-only step the most. The parts run in that order of importance
under ``--deadline-minutes``: the budget comparison gets what time is left (skipped when too
little is), and the JSON and Markdown are rewritten after every part, so a run stopped from
outside still leaves what it measured.

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
LOADER_SETTINGS = [(0, True), (2, True), (4, True), (8, False), (8, True), (16, True)]  # (num_workers, pin_memory)
QUICK_LOADER_SETTINGS = [(0, False), (1, False)]
PRECISION_EXPERIMENT = "dgmix_pretrain"  # the run with the 30-minute goal
QUICK_TEST_SEGMENTS = {  # added to train_throughput's quick overrides for the budget runs' test step
    "frames": ["data.test_segments.frames=32"],
    "seconds": ["data.test_segments.seconds=0.5", "data.test_segments.num=3"],
}


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks folder is no package)."""
    spec = importlib.util.spec_from_file_location(f"asd_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_throughput():
    return load_benchmark("train_throughput")


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


def bench_args(bench, experiment: str, batch: int, overrides: list[str], work: Path, quick: bool, precision: str,
               workers: int):
    argv = ["--experiment", experiment, "--batch-size", str(batch if not quick else 8), "--workdir", str(work),
            "--precision", precision, "--workers", str(workers), "--override", *overrides]
    return bench.parse_args(argv + (["--quick"] if quick else ["--steps", "30", "--warmup", "12"]))


def throughput(bench, experiment: str, batch: int, overrides: list[str], work: Path, quick: bool,
               precision: str, workers: int, trace: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train_throughput`` of ``experiment`` and a profile of a few full steps late in its warm-up
    (after cuDNN's autotuning, before the timed steps; in ``--quick`` within them)."""
    args = bench_args(bench, experiment, batch, overrides, work, quick, precision, workers)
    start = 1 if quick else args.warmup - 6
    profiler = StepProfiler(start, 2 if quick else 5, trace, gpu=not quick)
    return bench.run(args, callbacks=[profiler.callback]), profiler.result


def loader_sweep(bench, experiment: str, batch: int, overrides: list[str], work: Path, quick: bool,
                 precision: str, workers: int) -> dict[str, Any]:
    """Full-step samples/s of ``experiment`` per (``data.num_workers``, ``data.pin_memory``), the
    same data, model and steps each time."""
    args = bench_args(bench, experiment, batch, overrides, work, quick, precision, workers)
    cfg, datamodule, _, accelerator, precision = bench.prepare(args)
    rows = []
    for workers, pin in QUICK_LOADER_SETTINGS if quick else LOADER_SETTINGS:
        datamodule.num_workers, datamodule.pin_memory = workers, pin
        timer = bench.timed_fit(cfg, datamodule, args.steps, args.warmup, accelerator, precision)
        rows.append({"num_workers": workers, "pin_memory": pin, "full_step": timer.samples / timer.seconds})
        print(f"loader {experiment} workers={workers} pin_memory={pin}: {rows[-1]['full_step']:.0f} samples/s", flush=True)
    return {"experiment": experiment, "batch": args.batch_size, "rows": rows}


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
                    outer.guarded(outer.begin)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                if batch_idx == start + steps - 1:
                    outer.guarded(outer.end)

        self.callback = _Callback()
        self.trace = trace
        self.torch = torch
        self.gpu = gpu
        self.result: dict[str, Any] = {}
        self.prof = None

    def guarded(self, step) -> None:
        """A profiler that cannot start (e.g. no CUPTI in a sandbox) costs the profile, not the timing."""
        try:
            step()
        except Exception as error:  # noqa: BLE001
            self.prof = None
            self.result = {"failed": f"{type(error).__name__}: {error}"[-500:]}
            print(f"profiler: {self.result['failed']}", file=sys.stderr, flush=True)

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
        self.result = {"wall_seconds": wall, "gpu_busy_fraction": None}
        if not self.gpu:  # the CPU operators' own time
            top = sorted(self.prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
            self.result["top_ops"] = [{"name": e.key, "ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in top]
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "trace.json"
            self.prof.export_chrome_trace(str(raw))
            if self.gpu:  # from the kernels' own intervals (operator totals count a kernel twice)
                self.result.update(trace_summary(json.loads(raw.read_text())))
            if self.trace is not None:
                with open(raw, "rb") as src, gzip.open(self.trace, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def kernel_family(name: str) -> str:
    """A CUDA kernel's name without its template and argument lists."""
    return name.replace("(anonymous namespace)::", "").split("<")[0].split("(")[0].replace("void ", "").strip()


def trace_summary(trace: dict[str, Any], top: int = 12) -> dict[str, Any]:
    """From a chrome trace of a few steps: the share of the traced wall time in which a kernel or
    a copy ran on the GPU (the union of their intervals) and the kernel families by GPU time."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    device = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    if not device:
        return {"gpu_busy_fraction": None, "top_ops": []}
    wall = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)
    busy, (start, end) = 0.0, device[0]
    for a, b in device[1:]:
        if a > end:
            busy, start, end = busy + end - start, a, b
        else:
            end = max(end, b)
    busy += end - start
    families: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "kernel":
            entry = families.setdefault(kernel_family(e["name"]), [0.0, 0])
            entry[0] += e["dur"]
            entry[1] += 1
    total = sum(v[0] for v in families.values())
    ranked = sorted(families.items(), key=lambda item: item[1][0], reverse=True)[:top]
    return {"gpu_busy_fraction": busy / wall if wall > 0 else None,
            "top_ops": [{"name": name, "ms": us / 1e3, "calls": calls, "share": us / total} for name, (us, calls) in ranked]}


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
               quick: bool, precision: str, workers: int) -> dict[str, Any]:
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
                 f"data.cache_dir={work / 'cache'}", "data.progress=false", f"data.num_workers={0 if quick else workers}",
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


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"# GPU check ({'quick, CPU' if results['quick'] else env['device']})", "",
             f"{env['date']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Lightning "
             f"{env['lightning']}, timm {env['timm']}; precision {results['precision']}; "
             f"{results.get('seconds', 0) / 60:.1f} min in all.", "",
             "## Throughput (samples/s), peak memory and the paper's run", "",
             "| experiment | batch | model only | full step (again) | ratio (again; goal ≥ 0.85) | epochs | samples/epoch | "
             "paper run (min) | GPU busy in steps | peak MiB (model only / full) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["throughput"].items():
        rates, minutes = row["samples_per_second"], row["estimated_minutes"]
        busy = results["profile"].get(name, {}).get("gpu_busy_fraction")
        busy = "-" if busy is None else f"{100 * busy:.0f} %"
        paper_minutes = minutes[f"{row['epochs']}_epochs"]
        peak = row.get("peak_memory_mib", {})
        again = rates.get("full_step_again")
        lines.append(f"| {name} | {row['batch_shape'][0]} | {rates['model_only']:.0f} | {rates['full_step']:.0f}"
                     + (f" ({again:.0f})" if again else "") + f" | {row['ratio_full_to_model_only']:.2f}"
                     + (f" ({row['ratio_again_to_model_only']:.2f})" if again else "")
                     + f" | {row['epochs']} | {row['samples_per_epoch']} | "
                     f"{paper_minutes:.1f} | {busy} | {_mib(peak.get('model_only'))} / {_mib(peak.get('full_step'))} |")
    for name, fp32 in results.get("precision_fp32", {}).items():
        bf16 = results["throughput"].get(name)
        if not bf16:
            continue
        lines += ["", f"## {results['precision']} against fp32 ({name}, the same batches and steps)", "",
                  "| precision | model only | full step | loss after the timed steps (last / mean of last 5) | peak MiB (full) |",
                  "|---|---|---|---|---|"]
        for label, row in ((results["precision"], bf16), ("32-true", fp32)):
            loss = (row.get("loss") or {}).get("full_step") or {}
            loss_text = f"{loss['last']:.4f} / {loss['mean_last_5']:.4f}" if loss else "-"
            lines.append(f"| {label} | {row['samples_per_second']['model_only']:.0f} | "
                         f"{row['samples_per_second']['full_step']:.0f} | {loss_text} | "
                         f"{_mib(row.get('peak_memory_mib', {}).get('full_step'))} |")
    loader = results.get("loader")
    if loader:
        lines += ["", f"## Loader settings ({loader['experiment']}, batch {loader['batch']}, full step)", "",
                  "| data.num_workers | data.pin_memory | samples/s |", "|---|---|---|"]
        lines += [f"| {r['num_workers']} | {str(r['pin_memory']).lower()} | {r['full_step']:.0f} |" for r in loader["rows"]]
    budget = results.get("budget", {})
    if "methods" in budget:
        lines += ["", f"## Methods at a fixed budget ({budget['minutes']} min each, "
                  f"{budget['clips']} clips, one model per machine type)", "",
                  "| method | official | AUC source | AUC target | pAUC | epochs per machine type | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for method, row in budget["methods"].items():
            epochs = ", ".join(str(r["epochs"]) for r in row["runs"].values())
            seconds = sum(r["seconds"] for r in row["runs"].values())
            lines.append(f"| {method} | {100 * row['official_score']:.2f} | {100 * row['auc_source']:.2f} | "
                         f"{100 * row['auc_target']:.2f} | {100 * row['pauc']:.2f} | {epochs} | {seconds:.0f} |")
    elif "skipped" in budget:
        lines += ["", f"## Methods at a fixed budget: skipped ({budget['skipped']})"]
    lines += ["", "## Top operators in a few full steps", ""]
    for name, prof in results["profile"].items():
        ops = "; ".join(f"{o['name'][:80]} {o['ms']:.1f} ms" + (f" ({100 * o['share']:.0f} %)" if "share" in o else "")
                        for o in prof.get("top_ops", [])[:6])
        lines.append(f"- {name}: {ops}")
    rows = results.get("encoder_step", {}).get("results", [])
    if rows:
        lines += ["", "## BEATs-size training step (10 s clips)", "", "| device | mode | batch | clips/s | peak MiB |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['mode']} | {r['batch']} | {r['clips_per_second']:.2f} | {r['peak_memory_mib']:.0f} |"
                  for r in rows]
    for name, why in results.get("failed", {}).items():
        lines += ["", f"**{name} failed:** {why.splitlines()[-1] if why else ''}"]
    return "\n".join(lines) + "\n"


def encoder_step(out: Path, quick: bool) -> dict[str, Any]:
    """A BEATs-size encoder's training step (LoRA, full, full with gradient checkpointing):
    clips/s and peak memory on the CPU and the GPU (``benchmarks/encoder_step.py``)."""
    return load_benchmark("encoder_step").main(["--out", str(out)] + (["--quick"] if quick else ["--no-cpu"]))


def save(results: dict[str, Any], out: Path, t0: float) -> None:
    """Rewrite the JSON and the Markdown with what is measured so far."""
    results["seconds"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(results))


def part(results: dict[str, Any], name: str, fn, *args) -> Any:
    """``fn(*args)``; a failing part is recorded under ``results["failed"]`` and the others go on."""
    try:
        return fn(*args)
    except Exception as error:  # noqa: BLE001 (one part failing must not lose the others' results)
        import traceback

        traceback.print_exc()
        results.setdefault("failed", {})[name] = f"{type(error).__name__}: {error}"[-2000:]
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "gpu_check"),
                   help="output folder (default $OUT, else benchmarks/gpu_check)")
    p.add_argument("--minutes", type=float, default=1.5, help="most training budget per method (all machine types); "
                   "less when --deadline-minutes leaves less")
    p.add_argument("--deadline-minutes", type=float, default=8.5, help="the whole check's time: the budget "
                   "comparison gets what is left, or is skipped")
    p.add_argument("--precision", default="bf16-mixed", help="GPU precision")
    p.add_argument("--workers", type=int, default=8, help="data.num_workers of the throughput and budget runs")
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
                               "command": " ".join(["bash benchmarks/gpu_check.sh", *(argv or [])]),
                               "throughput": {}, "profile": {}}
    print(json.dumps(results["environment"], indent=2), flush=True)
    bench = load_throughput()
    for experiment, (batch, extra) in EXPERIMENTS.items():
        trace = out / "trace_dgmix_pretrain.json.gz" if experiment == "dgmix_pretrain" else None
        done = part(results, f"throughput {experiment}", throughput, bench, experiment, batch, extra,
                    work / "throughput", quick, precision, args.workers, trace)
        if done:
            results["throughput"][experiment], results["profile"][experiment] = done
            row = done[0]
            print(f"{experiment}: {row['samples_per_second']} ratio {row['ratio_full_to_model_only']:.2f} "
                  f"peak {row['peak_memory_mib']}", flush=True)
        save(results, out, t0)
        if experiment == PRECISION_EXPERIMENT and not quick and precision != "32-true":
            # the same run in fp32 (its data still written): speed and the loss after the same steps
            done = part(results, "precision", throughput, bench, experiment, batch, extra,
                        work / "throughput", quick, "32-true", args.workers, None)
            if done:
                results["precision_fp32"] = {experiment: done[0]}
            save(results, out, t0)
    if results["throughput"]:  # the loader sweep where the full step lags the most
        lagging = min(results["throughput"], key=lambda e: results["throughput"][e]["ratio_full_to_model_only"])
        batch, extra = EXPERIMENTS[lagging]
        results["loader"] = part(results, "loader", loader_sweep, bench, lagging, batch, extra,
                                 work / "throughput", quick, precision, args.workers)
        save(results, out, t0)
    results["encoder_step"] = part(results, "encoder step", encoder_step, out, quick) or {}
    save(results, out, t0)
    left = 60 * args.deadline_minutes - (time.perf_counter() - t0) - 60  # a minute for the data and the scoring
    minutes = args.minutes if quick else min(args.minutes, left / 60 / 1.6)  # setup and test steps: ~60 % on top
    if minutes < 0.3:
        results["budget"] = {"skipped": f"{left / 60:.1f} min left of --deadline-minutes {args.deadline_minutes}"}
    else:
        part(results, "budget", budget, results, work, quick, precision, args.workers, minutes, out, t0)
    save(results, out, t0)
    print(markdown(results))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return results


def budget(results: dict[str, Any], work: Path, quick: bool, precision: str, workers: int, minutes: float,
           out: Path, t0: float) -> None:
    """Each method trained for about ``minutes`` over the machine types, then scored."""
    root = budget_dataset(work, quick)
    seconds = 60 * minutes / len(BUDGET_MACHINES)
    rates = {"mobilenetv2_baseline": "mobilenetv2_baseline", "dgmix_scratch": "dgmix_finetune", "two_bce": "two_bce/fan"}
    results["budget"] = {"minutes": round(minutes, 2), "clips": sum(1 for _ in root.rglob("*.wav")), "methods": {}}
    for method in BUDGET_METHODS:
        measured = results["throughput"].get(rates[method])
        rate = measured["samples_per_second"]["full_step"] if measured else None
        runs = {}
        for machine in BUDGET_MACHINES:
            runs[machine] = budget_run(method, machine, root, work, seconds, rate, quick, precision, workers)
            runs[machine]["run_dir"] = str(work / "runs" / f"{method}_{machine}")
        results["budget"]["methods"][method] = {**combine(runs, root), "runs": runs}
        print(f"{method}: {results['budget']['methods'][method]['official_score']:.4f}", flush=True)
        save(results, out, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
