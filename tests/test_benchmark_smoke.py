"""Smoke test of benchmarks/data_pipeline.py in --quick mode (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "data_pipeline.py"


def load_benchmark(script: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(f"asd_benchmark_{script.stem}", script)
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


@pytest.mark.slow
def test_quick_train_throughput_compares_model_only_and_full_step(tmp_path: Path) -> None:
    bench = load_benchmark(BENCHMARKS / "train_throughput.py")
    out = tmp_path / "throughput.json"
    results = bench.main(["--quick", "--experiment", "two_bce", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    rates = results["samples_per_second"]
    assert rates["model_only"] > 0 and rates["full_step"] > 0
    assert results["ratio_full_to_model_only"] == pytest.approx(rates["full_step"] / rates["model_only"])
    assert results["batch_shape"] == [8, 1, 32, 32]  # the quick settings' batch of 0.5 s crops, 32 mels
    per_epoch = results["estimated_minutes"]["per_epoch"]
    assert per_epoch == pytest.approx(6000 / rates["full_step"] / 60)
    assert results["estimated_minutes"]["300_epochs"] == pytest.approx(300 * per_epoch)
