"""Smoke test of benchmarks/data_pipeline.py in --quick mode (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "data_pipeline.py"


def load_benchmark(script: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(f"asd_benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
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
    # an epoch of 1:1 batches: 6000 target clips (one 2 s crop each) and as many other clips
    assert results["samples_per_epoch"] == 2 * 6000 and results["epochs"] == 300
    per_epoch = results["estimated_minutes"]["per_epoch"]
    assert per_epoch == pytest.approx(2 * 6000 / rates["full_step"] / 60)
    assert results["estimated_minutes"]["300_epochs"] == pytest.approx(300 * per_epoch)


def test_an_epoch_of_windows_or_pairs_counts_what_the_datamodule_trains_on() -> None:
    """DG-Mix pre-training over one machine type's 6000 clips of 10 s: 32 windows each (64
    frames, hop 8), first windows and their partners: 2 * 6000 * 32 samples an epoch."""
    from types import SimpleNamespace

    bench = load_benchmark(BENCHMARKS / "train_throughput.py")
    dm = SimpleNamespace(train_crop={"frames": 64, "hop": 8, "per_clip": "all"}, crop_samples=63 * 512,
                         crop_hop_samples=8 * 512, decode_options=SimpleNamespace(sample_rate=16000),
                         sampler="same_machine_pairs")
    assert bench.samples_per_epoch(dm, 6000, 10.0) == 2 * 6000 * 32
    dm.sampler, dm.train_crop = "random", {"seconds": 2.0}
    assert bench.samples_per_epoch(dm, 6000, 10.0) == 6000


@pytest.mark.slow
def test_gpu_check_quick_mode_writes_every_part(tmp_path: Path) -> None:
    """``bash benchmarks/gpu_check.sh --quick``: the GPU check's every part at tiny sizes on the CPU."""
    import os
    import subprocess

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out)}
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--quick", "--workdir", str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["encoder_step.json", "gpu_check.json", "gpu_check.md", "trace_dgmix_pretrain.json.gz"]
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["quick"] and results["environment"]["torch"]
    assert set(results["throughput"]) == {"mobilenetv2_baseline", "dgmix_pretrain", "dgmix_finetune", "two_bce/fan"}
    for name, row in results["throughput"].items():
        assert row["samples_per_second"]["full_step"] > 0 and row["samples_per_epoch"] > 0, name
        assert results["profile"][name]["top_ops"], name
    methods = results["budget"]["methods"]
    assert set(methods) == {"mobilenetv2_baseline", "dgmix_scratch", "two_bce"}
    for name, row in methods.items():
        assert 0.0 <= row["official_score"] <= 1.0 and set(row["runs"]) == {"fan", "gearbox", "valve"}, name
    table = (out / "gpu_check.md").read_text()
    assert "| dgmix_pretrain |" in table and "| two_bce |" in table
    steps = results["encoder_step"]["results"]  # the BEATs-size step, tiny in quick mode
    assert {r["mode"] for r in steps} == {"lora", "full", "full_checkpointed"} and all(r["clips_per_second"] > 0 for r in steps)
    assert "| cpu | lora |" in table


def test_quick_method_table_runs_the_floor_a_trained_method_and_their_fusion(tmp_path: Path) -> None:
    bench = load_benchmark(BENCHMARKS / "method_table.py")
    out, markdown = tmp_path / "table.json", tmp_path / "table.md"
    keys = ["floor", "mobilenetv2", "fusion"]
    results = bench.main(["--quick", "--methods", *keys, "--threads", "1", "--workdir", str(tmp_path / "work"),
                          "--out", str(out), "--markdown", str(markdown)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    rows = {row["key"]: row for row in results["rows"]}
    assert list(rows) == keys and not [row["error"] for row in rows.values() if "error" in row]
    table = markdown.read_text()
    for key, row in rows.items():
        assert 0.0 <= row["official"] <= 100.0 and row["seconds"] > 0 and row["method"] in table
        assert {f"{m}/{metric}" for m in ("fan", "gearbox", "valve") for metric in ("auc_source", "auc_target", "pauc")} <= set(row)
        assert row.get("below_floor") == (None if key == "floor" else row["official"] < rows["floor"]["official"])
    assert rows["fusion"]["seconds"] >= rows["floor"]["seconds"] + rows["mobilenetv2"]["seconds"]  # its inputs'
    assert results["settings"]["quick"] is True and "QUICK smoke run" in table and "1 thread(s) per run" in table
    assert (tmp_path / "work" / "runs" / "mobilenetv2" / "0_0" / "submission" / "clip_scores.csv").is_file()
