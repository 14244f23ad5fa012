"""Every method on the synthetic set at a stated CPU budget → one table.

Each method is one line of :data:`METHODS`: its ``asd-train`` overrides (the epochs are its
budget), a chain of runs (pre-training, then fine-tuning), one run per machine type (outlier
exposure needs the other types as outliers), or a fusion of other rows. Every run goes to a
fresh ``asd-train`` process on ``data=synthetic`` (seed 0; fan, gearbox, valve; the dev sections
scored, as in ``make demo``), one after the other, timed by the wall clock. The table gives the
official score, the harmonic-mean AUC (source), AUC (target) and pAUC per machine type, the
seconds, and flags every method that scores below the training-free floor.

    .venv/bin/python benchmarks/method_table.py --out benchmarks/method_table.json --markdown benchmarks/method_table.md
    .venv/bin/python benchmarks/method_table.py --methods floor mobilenetv2 fusion
    .venv/bin/python benchmarks/method_table.py --quick       # smoke run: tiny data, 1 epoch

``--quick`` shrinks the data (one section per machine type, 8 + 2 training clips of 2.5 s, 2 test
clips per domain and label) and every run to one epoch of at most two batches: it checks that
every row runs, not how well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MACHINES = ("fan", "gearbox", "valve")
QUICK_DATA = ["+data.synthetic.dev_sections=[0]", "+data.synthetic.eval_sections=[]",
              "+data.synthetic.source_train_clips=8", "+data.synthetic.target_train_clips=2",
              "+data.synthetic.test_clips=2", "+data.synthetic.clip_seconds=2.5"]
QUICK_RUN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


@dataclass(frozen=True)
class Method:
    """A row: ``runs`` are the overrides of each ``asd-train`` run of a chain (the last one is
    scored); ``per_machine`` runs the chain once per machine type; ``fuse`` names rows whose
    finished runs are fused instead."""

    key: str
    label: str
    runs: tuple[tuple[str, ...], ...] = ()
    per_machine: bool = False
    fuse: tuple[str, ...] = field(default=())
    quick: tuple[str, ...] = ()  # extra overrides of every run in --quick mode (e.g. its shorter clips)


# one line per method; its epochs are its CPU budget (the table reports the seconds they cost).
# Pre-training at batch 64 takes LARS's rate scaled linearly from the paper's 0.8 at 1024 pairs
# (0.05); at 0.8 the 64-pair VICReg pre-training collapses to one point within 10 epochs.
METHODS = [
    Method("floor", "log-mel statistics, 1-NN (training-free floor)", (("experiment=logmel_knn",),)),
    Method("ae", "AE baseline", (("experiment=ae_baseline", "trainer.max_epochs=30"),)),
    Method("mobilenetv2", "MobileNetV2 baseline, inlier 1-NN", (("experiment=mobilenetv2_baseline", "callbacks=inlier", "trainer.max_epochs=20"),)),
    Method("dgmix_scratch", "DG-Mix from scratch", (("experiment=dgmix_scratch", "trainer.max_epochs=10"),)),
    Method("dgmix_chained", "DG-Mix pre-trained, fine-tuned", (("experiment=dgmix_pretrain", "data.batch_size=64", "model.optimizer.lr=0.05", "trainer.max_epochs=10"), ("experiment=dgmix_finetune", "trainer.max_epochs=10"))),
    Method("vicreg_chained", "VICReg pre-trained, fine-tuned", (("experiment=vicreg_pretrain", "data.batch_size=64", "model.optimizer.lr=0.05", "trainer.max_epochs=10"), ("experiment=vicreg_finetune", "trainer.max_epochs=10"))),
    # the GMM sized to the synthetic set's few held-out clips (the paper experiments fit Table I's
    # size as named, a singular full covariance on so few rows: docs/reproduction.md)
    Method("two_bce", "two-BCE outlier exposure", (("experiment=two_bce", "protocol=official", "data.batch_size=32", "trainer.max_epochs=10",
                                                    "callbacks.inlier.model.size_guard=shrink"),), per_machine=True),
    # the margin recipe on whole 4 s synthetic clips, one class per section (the experiments' default
    # attribute_domain classes have 1-2 target clips each on the synthetic set; README)
    Method("sc_adacos", "sub-cluster AdaCos, data.labels=section", (("experiment=sc_adacos", "data.labels=section", "data.train_crop.seconds=4", "trainer.max_epochs=60"),), quick=("data.train_crop.seconds=2.5",)),
    Method("adaproj", "AdaProj, data.labels=section", (("experiment=adaproj", "data.labels=section", "data.train_crop.seconds=4", "trainer.max_epochs=60"),), quick=("data.train_crop.seconds=2.5",)),
    Method("fusion", "fusion: floor + MobileNetV2", fuse=("floor", "mobilenetv2")),
    Method("fusion_margin", "fusion: floor + AdaProj", fuse=("floor", "adaproj")),
]


def run_command(overrides: Sequence[str], run_dir: Path, work: Path, quick: bool) -> list[str]:
    """The ``asd-train`` command of one run (a fresh process, CSV logs, no plots)."""
    data = ["data=synthetic", f"data.root={work / 'data' / ('synthetic-quick' if quick else 'synthetic2022')}",
            f"data.cache_dir={work / 'cache'}", "data.progress=false", "data.num_workers=0"]
    extra = QUICK_DATA + QUICK_RUN if quick else []
    return [sys.executable, "-m", "asd_lightning.train", *data, "logger=csv", "trainer.accelerator=cpu",
            "++callbacks.inlier.plots=false", f"paths.root_dir={work}", f"hydra.run.dir={run_dir}", *overrides, *extra]


def run_method(method: Method, work: Path, quick: bool, env: dict[str, str]) -> dict[str, Any]:
    """Run a method's chain(s); returns its seconds and the clip-score files of its scored runs."""
    jobs = [[f"data.machine_types=[{m}]"] for m in MACHINES] if method.per_machine else [[]]
    seconds, scored = 0.0, []
    for j, job in enumerate(jobs):
        for step, overrides in enumerate(method.runs):
            run_dir = work / "runs" / method.key / f"{j}_{step}"
            command = run_command([*overrides, *job, *(method.quick if quick else ())], run_dir, work, quick)
            start = time.perf_counter()
            with open(work / "runs" / f"{method.key}_{j}_{step}.log", "w") as out:
                done = subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env)
            seconds += time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command[2:])} failed (exit {done.returncode}); see {out.name}")
        scored.append(run_dir / "submission" / "clip_scores.csv")
    return {"seconds": seconds, "clip_scores": [str(p) for p in scored]}


def report_of(tables: list[pd.DataFrame]):
    """The official report of one method's clip scores (several machine types' runs concatenated)."""
    from asd_lightning.metrics.results import score_run

    scores = pd.concat(tables, ignore_index=True)
    return score_run(scores[scores["split"] == "test"], scores[scores["split"] == "train"],
                     int(scores["year"].iloc[0])).report


def row_of(method: Method, report, seconds: float) -> dict[str, Any]:
    machines = report.machines.set_index("machine")
    row = {"key": method.key, "method": method.label, "official": 100 * report.official_score,
           "auc_source": 100 * report.overall["auc_source_hmean"], "auc_target": 100 * report.overall["auc_target_hmean"],
           "pauc": 100 * report.overall["pauc_hmean"], "seconds": seconds}
    for machine in machines.index:
        for metric in ("auc_source", "auc_target", "pauc"):
            row[f"{machine}/{metric}"] = 100 * machines.at[machine, f"{metric}_hmean"]
    return row


def build_table(methods: Sequence[Method], work: Path, quick: bool, env: dict[str, str]) -> list[dict[str, Any]]:
    from asd_lightning.scoring.fusion import fuse, read_clip_scores

    rows, finished = [], {}
    for method in methods:
        print(f"[method table] {method.key} ...", flush=True)
        try:
            if method.fuse:
                missing = [k for k in method.fuse if k not in finished]
                if missing:
                    raise RuntimeError(f"fuses {missing}, which did not run (list them before it)")
                start = time.perf_counter()
                parts = [pd.concat([read_clip_scores(p) for p in finished[k]["clip_scores"]]) for k in method.fuse]
                report = fuse(parts).report
                seconds = time.perf_counter() - start + sum(finished[k]["seconds"] for k in method.fuse)
            else:
                finished[method.key] = run_method(method, work, quick, env)
                report = report_of([read_clip_scores(p) for p in finished[method.key]["clip_scores"]])
                seconds = finished[method.key]["seconds"]
            rows.append(row_of(method, report, seconds))
        except (RuntimeError, ValueError, OSError) as error:
            rows.append({"key": method.key, "method": method.label, "error": " ".join(str(error).split())})
        print(f"[method table] {method.key}: {rows[-1].get('official', rows[-1].get('error'))}", flush=True)
    floor = next((r["official"] for r in rows if r["key"] == "floor" and "official" in r), None)
    for row in rows:
        if floor is not None and "official" in row and row["key"] != "floor":
            row["below_floor"] = row["official"] < floor
    return rows


def markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    head = ["method", "official", *(f"{m} src / tgt / pAUC" for m in MACHINES), "all src / tgt / pAUC", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |" + " |" * (len(head) - 2))
            continue
        cells = [r["method"], f"{r['official']:.1f}" + (" (below the floor)" if r.get("below_floor") else "")]
        for prefix in [f"{m}/" for m in MACHINES] + [""]:
            cells.append(" / ".join(f"{r.get(prefix + k, float('nan')):.0f}" for k in ("auc_source", "auc_target", "pauc")))
        cells.append(f"{r['seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    threads = f", {settings['threads']} thread(s) per run" if settings["threads"] else ""
    note = (f"\n{settings['date']}, {settings['cpus']} CPU cores ({settings['cpu']}){threads}, load average "
            f"{settings['load_before']:.1f} before / {settings['load_after']:.1f} after; data=synthetic (seed 0), "
            f"dev sections; harmonic means in %; seconds = wall time of the method's asd-train runs"
            f"{' (a fusion: its inputs)' if any(m.fuse for m in METHODS) else ''}"
            f"{'; QUICK smoke run, not a measurement' if settings['quick'] else ''}.")
    return "\n".join(lines) + "\n" + note + "\n"


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    keys = [m.key for m in METHODS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", choices=keys, default=keys, help="rows to run (default: all, in order)")
    p.add_argument("--workdir", default=None, help="data, cache and runs (default: a new temporary folder, kept)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch of at most 2 batches")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per run (OMP_NUM_THREADS; default: torch's choice). On a shared machine "
                        "1 avoids threads waiting on each other")
    p.add_argument("--out", default=None, help="write the rows and settings as JSON here")
    p.add_argument("--markdown", default=None, help="write the markdown table here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="asd-method-table-")).resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if m.key in args.methods]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
                              if args.threads else {}))
    settings = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": git_commit(), "quick": args.quick,
                "cpus": os.cpu_count(), "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                "load_before": os.getloadavg()[0], "workdir": str(work),
                "methods": {m.key: {"runs": m.runs, "per_machine": m.per_machine, "fuse": m.fuse} for m in methods}}
    rows = build_table(methods, work, args.quick, env)
    settings["load_after"] = os.getloadavg()[0]
    table = markdown(rows, settings)
    print(table)
    results = {"settings": settings, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
