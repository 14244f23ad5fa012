"""Smoke test of benchmarks/data_pipeline.py in --quick mode (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "data_pipeline.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("asd_benchmark_data_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_positive_throughputs(tmp_path: Path) -> None:
    pytest.importorskip("librosa")
    bench = load_benchmark()
    out = tmp_path / "results.json"
    returned = bench.main(["--quick", "--no-gpu", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["settings"]["quick"] is True
    assert results["cache_build_seconds"] >= 0

    by_pipeline = {}
    for row in results["results"]:
        by_pipeline.setdefault(row["pipeline"], []).append(row)
    assert set(by_pipeline) >= {"a", "b"}
    items = {row["timing"]["items_per_epoch"] for row in results["results"]}
    assert items == {results["settings"]["clips"]}  # one window per training clip, same for (a) and (b)
    for row in by_pipeline["a"] + by_pipeline["b"]:
        assert row["timing"]["clips_per_second_mean"] > 0
        assert row["timing"]["seconds_per_epoch_mean"] > 0
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["torch"]
    # the headline compares the fastest (b) setting with the fastest (a) setting, by mean epoch
    goal = results["goal"]
    rate = {row["key"]: row["timing"]["clips_per_second_mean"] for row in results["results"]}
    best_a = max((k for k in rate if k.startswith("a_")), key=rate.get)
    best_b = max((k for k in rate if k.startswith("b_")), key=rate.get)
    assert (goal["best_a"], goal["best_b"]) == (best_a, best_b)
    assert goal["speedup_best_b_vs_best_a"] == pytest.approx(rate[best_b] / rate[best_a])
    assert goal["threshold"] == 20.0
    assert goal["met"] == (goal["speedup_best_b_vs_best_a"] >= 20.0)
    assert returned["throughput_clips_per_second"] == results["throughput_clips_per_second"]
