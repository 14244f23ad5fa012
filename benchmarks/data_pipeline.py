"""Data-pipeline benchmark: per-file librosa baseline vs the cached datamodule.

On the same synthetic clips (written with :func:`asd_lightning.synth.write_synthetic_dataset`),
time one *repeated* training epoch of

(a) the per-file baseline most public ASD code uses: for every clip, every epoch,
    ``librosa.load`` + ``librosa.feature.melspectrogram`` + ``librosa.power_to_db`` on the
    CPU, then one random 64-frame window per clip, batched as torch tensors;
(b) :class:`asd_lightning.data.DCASE2022DataModule`: int16 crops from the memory-mapped
    cache, then ``on_after_batch_transfer`` (float, normalisation, torchaudio log-mel) on
    the CPU;
(c) the same as (b) on the GPU, when one is available.

Both pipelines yield one random 64-frame window per training clip per epoch, in batches of
64 (the last partial batch dropped in both), so items per epoch are equal. The decode into
the cache is a one-time cost and is reported separately ("cache build seconds"); every
pipeline runs ``--warmup`` epochs first (worker start-up, librosa's first-call JIT, cache
pages), then the ``--epochs`` timed epochs run round-robin over all pipelines (mean, median
and fastest epoch reported). Run it on an otherwise idle machine.

    .venv/bin/python benchmarks/data_pipeline.py --out benchmarks/data_pipeline.json
    .venv/bin/python benchmarks/data_pipeline.py --quick       # smoke run, a few seconds

Speed targets live here, never in the tests (tests/test_benchmark_smoke.py only checks that
the quick mode runs and reports positive throughputs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 512
N_MELS = 128
FRAMES = 64
GOAL_SPEEDUP = 20.0

DEFAULTS = dict(clips=4096, seconds=10.0, epochs=3, warmup=1, batch_size=64, workers=[0, 2])
QUICK = dict(clips=8, seconds=2.0, epochs=1, warmup=1, batch_size=64, workers=[0])


# ---------------------------------------------------------------------------- data set
def write_dataset(root: Path, clips: int, seconds: float, machine: str, seed: int) -> tuple[Path, float, bool]:
    """The synthetic data set (reused when ``root`` already holds the same one)."""
    from asd_lightning.synth import SynthConfig, matches_synthetic_dataset, write_synthetic_dataset

    wanted = SynthConfig(year=2022, machine_types=[machine], dev_sections=[0], eval_sections=[],
                         source_train_clips=clips, target_train_clips=0, test_clips=0,
                         clip_seconds=seconds, seed=seed)
    if matches_synthetic_dataset(root, wanted):
        return root, 0.0, True
    start = time.perf_counter()
    write_synthetic_dataset(root, wanted, overwrite=True)
    return root, time.perf_counter() - start, False


# ---------------------------------------------------------------------------- (a) baseline
class PerFileLogMel(Dataset):
    """Decode + log-mel the whole clip with librosa on every access; one random window."""

    def __init__(self, paths: list[str], frames: int = FRAMES) -> None:
        self.paths = list(paths)
        self.frames = frames

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        import librosa

        y, _ = librosa.load(self.paths[i], sr=SAMPLE_RATE, mono=True)
        mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                             n_mels=N_MELS, power=2.0)
        log_mel = librosa.power_to_db(mel)
        room = log_mel.shape[1] - self.frames
        start = int(torch.randint(0, room + 1, ())) if room > 0 else 0
        window = log_mel[:, start:start + self.frames]
        if window.shape[1] < self.frames:  # clips shorter than the window wrap around
            window = np.tile(log_mel, (1, int(np.ceil(self.frames / log_mel.shape[1]))))[:, :self.frames]
        return torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)).unsqueeze(0)


def baseline_loader(paths: list[str], batch_size: int, workers: int) -> DataLoader:
    # same batching rule as DCASEDataModule.train_dataloader: shuffle, drop the last partial batch
    return DataLoader(PerFileLogMel(paths), batch_size=batch_size, shuffle=True,
                      drop_last=len(paths) > batch_size, num_workers=workers,
                      persistent_workers=workers > 0)


def baseline_epoch(loader: DataLoader, device: torch.device) -> tuple[int, float]:
    items, check = 0, 0.0
    for batch in loader:
        features = batch.to(device)
        check += features.sum().item()
        items += features.shape[0]
    return items, check


# ---------------------------------------------------------------------------- (b)/(c) cached
def make_datamodule(root: Path, cache_dir: Path, machine: str, batch_size: int, workers: int, seed: int):
    from asd_lightning.data import DCASE2022DataModule

    return DCASE2022DataModule(
        root=root, year=2022, machine_types=[machine], val_fraction=0.0, batch_size=batch_size,
        num_workers=workers, features={"n_fft": N_FFT, "hop_length": HOP, "n_mels": N_MELS},
        train_crop={"frames": FRAMES}, cache_dir=cache_dir, progress=False, seed=seed)


def cached_epoch(dm, loader: DataLoader, device: torch.device) -> tuple[int, float]:
    items = 0
    check = torch.zeros((), device=device)
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch = dm.on_after_batch_transfer(batch, 0)
        check += batch["features"].sum()
        items += batch["features"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return items, float(check.item())


def loader_only_epoch(loader: DataLoader) -> tuple[int, float]:
    """Iterate the int16 crops only (no device step)."""
    items = 0
    for batch in loader:
        items += batch["wave"].shape[0]
    return items, 0.0


# ---------------------------------------------------------------------------- timing
class Runner:
    """One pipeline configuration: an epoch function plus its timings."""

    def __init__(self, key: str, name: str, epoch: Callable[[], tuple[int, float]], **info: Any) -> None:
        self.key, self.name, self.epoch, self.info = key, name, epoch, info
        self.warmup_seconds: list[float] = []
        self.seconds: list[float] = []
        self.items: list[int] = []
        self.load: list[float] = []

    def run_once(self, timed: bool) -> float:
        start = time.perf_counter()
        n, check = self.epoch()
        elapsed = time.perf_counter() - start
        if not np.isfinite(check):
            raise RuntimeError(f"{self.name}: non-finite features")
        if timed:
            self.seconds.append(elapsed)
            self.items.append(n)
            if hasattr(os, "getloadavg"):
                self.load.append(os.getloadavg()[0])
        else:
            self.warmup_seconds.append(elapsed)
        return elapsed

    def timing(self) -> dict[str, Any]:
        if len(set(self.items)) != 1:
            raise RuntimeError(f"{self.name}: items per epoch changed between epochs: {self.items}")
        mean, best = float(np.mean(self.seconds)), float(np.min(self.seconds))
        return {
            "items_per_epoch": self.items[0],
            "warmup_seconds": self.warmup_seconds,
            "epoch_seconds": self.seconds,
            "seconds_per_epoch_mean": mean,
            "seconds_per_epoch_min": best,
            "seconds_per_epoch_median": float(np.median(self.seconds)),
            "clips_per_second_mean": self.items[0] / mean,
            "clips_per_second_best": self.items[0] / best,
            "load_average_1min_after_each_epoch": self.load,
        }


def time_round_robin(runners: list[Runner], epochs: int, warmup: int) -> None:
    """Warm every runner up, then time the epochs round-robin (a1 b1 a2 b2 ...).

    Interleaving spreads bursts of load from other processes over all pipelines instead of
    letting one burst land on a single pipeline's epochs.
    """
    for runner in runners:
        print(f"  warm-up: {runner.name} ...", flush=True)
        for _ in range(warmup):
            runner.run_once(timed=False)
    for epoch in range(epochs):
        for runner in runners:
            elapsed = runner.run_once(timed=True)
            print(f"  epoch {epoch + 1}/{epochs}: {runner.name}: {elapsed:.3f} s "
                  f"({runner.items[-1] / elapsed:.0f} clips/s)", flush=True)


def profile_epoch(epoch: Callable[[], tuple[int, float]], top: int = 20) -> list[dict[str, Any]]:
    """cProfile one epoch; the ``top`` functions by own time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    epoch()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():
        rows.append({"function": f"{Path(filename).name}:{line}({function})", "calls": calls,
                     "tottime": tottime, "cumtime": cumtime, "share_of_total": tottime / total if total else 0.0})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    return rows[:top]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    for name in ("torchaudio", "librosa", "numpy", "soundfile"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - optional
            info[name] = None
    return info


# ---------------------------------------------------------------------------- report
def print_table(rows: list[dict[str, Any]], reference: float) -> None:
    header = f"{'pipeline':<48} {'s/epoch mean':>12} {'s/epoch min':>11} {'clips/s':>9} {'vs (a)':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        t = row["timing"]
        speedup = t["clips_per_second_mean"] / reference if reference else float("nan")
        print(f"{row['name']:<48} {t['seconds_per_epoch_mean']:>12.3f} {t['seconds_per_epoch_min']:>11.3f} "
              f"{t['clips_per_second_mean']:>9.0f} {speedup:>7.1f}x")


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=None,
                        help=f"training clips (default {DEFAULTS['clips']}; a multiple of the batch size "
                             "avoids dropping a partial batch)")
    parser.add_argument("--seconds", type=float, default=None, help=f"clip length (default {DEFAULTS['seconds']})")
    parser.add_argument("--epochs", type=int, default=None, help=f"timed epochs (default {DEFAULTS['epochs']})")
    parser.add_argument("--warmup", type=int, default=None, help=f"untimed epochs first (default {DEFAULTS['warmup']})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {DEFAULTS['batch_size']}")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help=f"DataLoader num_workers settings to time (default {DEFAULTS['workers']})")
    parser.add_argument("--machine", default="fan", help="machine type of the synthetic clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None,
                        help="data set and cache go here (default: a temporary folder, removed afterwards); "
                             "an existing data set with the same settings is reused, the cache is always rebuilt")
    parser.add_argument("--out", default=None, help="write all numbers as JSON here")
    parser.add_argument("--no-gpu", action="store_true", help="skip (c) even when CUDA is available")
    parser.add_argument("--profile", action="store_true", help="also cProfile one (b) epoch and print the top functions")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke mode: {QUICK['clips']} clips of {QUICK['seconds']:g} s, {QUICK['epochs']} epoch")
    args = parser.parse_args(None if argv is None else list(argv))
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.clips < 1 or args.epochs < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--clips, --epochs and --batch-size must be >= 1, --warmup >= 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cpu = torch.device("cpu")
    machine_before = machine_info()
    load = machine_before["load_average_1_5_15min"]
    if load and load[0] > 0.5:
        print(f"warning: 1-minute load average is {load[0]:.2f} before the benchmark: other processes "
              "compete for the CPU and the timings will be pessimistic", flush=True)
    torch.manual_seed(args.seed)
    print(f"writing / reusing {args.clips} synthetic clips of {args.seconds:g} s in {workdir / 'data'} ...", flush=True)
    root, write_seconds, reused = write_dataset(workdir / "data", args.clips, args.seconds, args.machine, args.seed)
    print(f"  {'reused' if reused else f'written in {write_seconds:.1f} s'}", flush=True)

    cache_dir = workdir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    first = make_datamodule(root, cache_dir, args.machine, args.batch_size, args.workers[0], args.seed)
    start = time.perf_counter()
    first.prepare_data()  # index + decode every clip into the int16 cache
    cache_build = time.perf_counter() - start
    start = time.perf_counter()
    first.setup("fit")  # index, open the cache, amplitude statistics
    setup_seconds = time.perf_counter() - start
    cache_bytes = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
    print(f"cache build (prepare_data, one-time): {cache_build:.2f} s; setup: {setup_seconds:.2f} s; "
          f"cache size {cache_bytes / 2**20:.1f} MiB", flush=True)

    paths = first.clips["path"].to_numpy()[first.rows("train")].tolist()
    if len(paths) != args.clips:
        raise RuntimeError(f"expected {args.clips} training clips, the datamodule found {len(paths)}")

    runners: list[Runner] = []
    # (a) per-file librosa baseline
    for workers in args.workers:
        loader = baseline_loader(paths, args.batch_size, workers)
        runners.append(Runner(f"a_per_file_w{workers}", f"(a) per-file librosa, workers={workers}",
                              lambda loader=loader: baseline_epoch(loader, cpu),
                              pipeline="a", device="cpu", num_workers=workers))
    # (b) cached datamodule, features on the CPU; (c) on the GPU
    devices = [("b", cpu)]
    gpu_note = None
    if args.no_gpu:
        gpu_note = "skipped (--no-gpu)"
    elif torch.cuda.is_available():
        devices.append(("c", torch.device("cuda")))
    else:
        gpu_note = "skipped: torch.cuda.is_available() is False on this machine"
    modules = {}
    for label, device in devices:
        for workers in args.workers:
            if workers not in modules:
                dm = first if workers == args.workers[0] else make_datamodule(
                    root, cache_dir, args.machine, args.batch_size, workers, args.seed)
                dm.setup("fit")
                modules[workers] = dm
            dm = modules[workers]
            loader = dm.train_dataloader()  # built once and reused for every epoch, as Lightning does
            where = "CPU" if device.type == "cpu" else "GPU"
            runners.append(Runner(f"{label}_cached_{device.type}_w{workers}",
                                  f"({label}) cached datamodule, {where} features, workers={workers}",
                                  lambda dm=dm, loader=loader, device=device: cached_epoch(dm, loader, device),
                                  pipeline=label, device=str(device), num_workers=workers))
    if gpu_note:
        print(f"(c) GPU: {gpu_note}", flush=True)

    print(f"timing {len(runners)} pipelines: {args.warmup} warm-up epoch(s) each, then {args.epochs} timed "
          "epoch(s) round-robin ...", flush=True)
    time_round_robin(runners, args.epochs, args.warmup)
    rows = [{"key": r.key, "name": r.name, "timing": r.timing(), **r.info} for r in runners]

    # where (b)'s time goes (workers=0, CPU): the int16 crops alone vs the device-side step alone
    dm0 = modules[args.workers[0]]
    loader0 = dm0.train_dataloader()
    breakdown: dict[str, Any] = {"num_workers": args.workers[0]}
    start = time.perf_counter()
    loader_only_epoch(loader0)
    breakdown["loader_only_seconds_per_epoch"] = time.perf_counter() - start
    batch = next(iter(loader0))
    n_batches = max(len(loader0), 1)
    start = time.perf_counter()
    for _ in range(n_batches):
        out = dm0.on_after_batch_transfer(dict(batch), 0)
        out["features"].sum().item()
    step = time.perf_counter() - start
    breakdown["on_after_batch_transfer_only_seconds_per_epoch"] = step
    breakdown["on_after_batch_transfer_ms_per_batch"] = 1000 * step / n_batches
    profile = None
    if args.profile:
        print("profiling one epoch of (b), features on the CPU ...", flush=True)
        profile = profile_epoch(lambda: cached_epoch(dm0, loader0, cpu))

    a_rows = [r for r in rows if r["pipeline"] == "a"]
    b_rows = [r for r in rows if r["pipeline"] == "b"]
    c_rows = [r for r in rows if r["pipeline"] == "c"]
    reference_row = next((r for r in a_rows if r["num_workers"] == 0), a_rows[0])
    reference = reference_row["timing"]["clips_per_second_mean"]
    for row in rows:
        row["speedup_vs_reference_a"] = row["timing"]["clips_per_second_mean"] / reference

    def best(group, stat="clips_per_second_mean"):
        return max(group, key=lambda r: r["timing"][stat]) if group else None

    def ratio(b, a, stat="clips_per_second_mean"):
        return b["timing"][stat] / a["timing"][stat]

    best_a, best_b, best_c = best(a_rows), best(b_rows), best(c_rows)
    same = {str(w): ratio(next(r for r in b_rows if r["num_workers"] == w), next(r for r in a_rows if r["num_workers"] == w))
            for w in args.workers}
    headline = ratio(best_b, best_a)
    headline_best_epoch = ratio(best(b_rows, "clips_per_second_best"), best(a_rows, "clips_per_second_best"),
                                "clips_per_second_best")
    usable = machine_before["usable_cpus"]
    goal = {
        "statement": f"(b) >= {GOAL_SPEEDUP:g}x (a) on 2 CPU cores for a repeated epoch",
        "threshold": GOAL_SPEEDUP,
        "compared": "best (b) setting vs best (a) setting, mean epoch time",
        "speedup_best_b_vs_best_a": headline,
        "speedup_best_b_vs_best_a_by_fastest_epoch": headline_best_epoch,
        "speedup_b_vs_a_same_workers": same,
        "best_a": best_a["key"],
        "best_b": best_b["key"],
        "met": bool(headline >= GOAL_SPEEDUP),
        "usable_cpus": usable,
    }

    print()
    print(f"{args.clips} clips x {args.seconds:g} s, batch {args.batch_size}, {FRAMES}-frame windows, "
          f"{args.epochs} timed epoch(s) after {args.warmup} warm-up; speed-up vs {reference_row['name']}")
    print_table(rows, reference)
    print(f"cache build (one-time): {cache_build:.2f} s (+ setup {setup_seconds:.2f} s)")
    print(f"(b) breakdown, workers={args.workers[0]}: int16 crops alone "
          f"{breakdown['loader_only_seconds_per_epoch']:.3f} s/epoch; on_after_batch_transfer alone "
          f"{breakdown['on_after_batch_transfer_only_seconds_per_epoch']:.3f} s/epoch "
          f"({breakdown['on_after_batch_transfer_ms_per_batch']:.1f} ms/batch)")
    if profile:
        print("(b) cProfile, top functions by own time:")
        for row in profile[:12]:
            print(f"  {row['tottime']:7.3f} s {100 * row['share_of_total']:5.1f}%  {row['calls']:>7}  {row['function']}")
    print("speed-up (b)/(a), same num_workers: " + ", ".join(f"workers={w}: {s:.1f}x" for w, s in same.items()))
    print(f"speed-up best (b) [{best_b['key']}] / best (a) [{best_a['key']}]: {headline:.1f}x "
          f"(by fastest epoch: {headline_best_epoch:.1f}x)")
    if best_c:
        print(f"speed-up best (c) [{best_c['key']}] / best (a): {ratio(best_c, best_a):.1f}x")
    note = "" if usable == 2 else f" (note: this machine has {usable} usable CPUs, not 2)"
    print(f"goal {goal['statement']}: {'MET' if goal['met'] else 'NOT MET'} ({headline:.1f}x){note}")

    return {
        "benchmark": "data_pipeline",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "clips": args.clips, "seconds": args.seconds, "epochs": args.epochs, "warmup": args.warmup,
            "batch_size": args.batch_size, "workers": args.workers, "machine_type": args.machine,
            "seed": args.seed, "quick": args.quick, "sample_rate": SAMPLE_RATE, "n_fft": N_FFT,
            "hop_length": HOP, "n_mels": N_MELS, "window_frames": FRAMES,
            "crop_samples": int(first.crop_samples), "timing_order": "round-robin", "workdir": str(workdir),
        },
        "machine": {**machine_info(), "load_average_before": machine_before["load_average_1_5_15min"]},
        "dataset": {"written_seconds": write_seconds, "reused": reused},
        "cache_build_seconds": cache_build,
        "setup_seconds": setup_seconds,
        "cache_bytes": cache_bytes,
        "results": rows,
        "throughput_clips_per_second": {r["key"]: r["timing"]["clips_per_second_mean"] for r in rows},
        "breakdown_b": breakdown,
        "profile_b": profile,
        "gpu": gpu_note or "timed",
        "goal": goal,
    }


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and with ``--out`` writes) the results as a dict."""
    args = parse_args(argv)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="asd-bench-")) if temporary else Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, workdir)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
