"""Score fusion: z-scores per section by hand, the checks, and `asd-fuse` on real run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asd_lightning.metrics import evaluate
from asd_lightning.metrics.cli import main as evaluate_main
from asd_lightning.scoring.fusion import fuse, read_clip_scores
from asd_lightning.scoring.fusion_cli import main as fuse_main
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train, local_copy


def run_table(fit: list[float], test: list[float], year: int = 2022) -> pd.DataFrame:
    """One section: fit clips f0, f1, ...; test clips t0 (normal, source), t1 (anomaly, source),
    t2 (normal, target), t3 (anomaly, target)."""
    rows = [("train", f"f{i}", "source", "normal", s) for i, s in enumerate(fit)]
    rows += [("test", f"t{i}", ("source", "source", "target", "target")[i], ("normal", "anomaly")[i % 2], s)
             for i, s in enumerate(test)]
    return pd.DataFrame([{"year": year, "machine": "fan", "section": 0, "domain": d, "label": label, "split": split,
                          "file": f, "score": s} for split, f, d, label, s in rows])


def test_fused_score_is_the_weighted_mean_of_per_section_z_scores() -> None:
    a = run_table(fit=[1.0, 3.0], test=[2.0, 4.0, 0.0, 6.0])      # fit mean 2, std 1
    b = run_table(fit=[10.0, 30.0], test=[20.0, 0.0, 40.0, 60.0])  # fit mean 20, std 10
    run = fuse([a, b], weights=[3.0, 1.0])
    # z: a (0, 2, -2, 4), b (0, -2, 2, 4); weighted (3a + b) / 4
    assert run.test.sort_values("file")["score"].tolist() == pytest.approx([0.0, 1.0, -1.0, 4.0])
    assert run.fit.sort_values("file")["score"].tolist() == pytest.approx([-1.0, 1.0])
    assert run.test["decision"].isin([0, 1]).all() and set(run.thresholds) == {"fan"}
    assert run.report.official_score == pytest.approx(evaluate(run.test, 2022).official_score)


def test_each_section_is_z_scored_by_its_own_fit_clips() -> None:
    """Two sections whose fit scores differ a hundredfold: each is z-scored by its own fit clips.
    Catches z-scoring pooled over all sections (or per machine type): section 1's fit clips
    (mean 200, std 100) would then set the scale of section 0's clips too."""
    def two_sections(fit: tuple[list[float], list[float]], test: tuple[list[float], list[float]]) -> pd.DataFrame:
        return pd.concat([run_table(f, t).assign(section=s) for s, (f, t) in enumerate(zip(fit, test))],
                         ignore_index=True)

    a = two_sections(([1.0, 3.0], [100.0, 300.0]), ([2.0, 4.0, 0.0, 6.0], [300.0, 500.0, 100.0, 200.0]))
    b = two_sections(([10.0, 30.0], [0.0, 4.0]), ([20.0, 0.0, 40.0, 60.0], [2.0, 6.0, 0.0, 8.0]))
    run = fuse([a, b])
    # a: section 0 (mean 2, std 1) → 0, 2, -2, 4; section 1 (mean 200, std 100) → 1, 3, -1, 0
    # b: section 0 (mean 20, std 10) → 0, -2, 2, 4; section 1 (mean 2, std 2) → 0, 2, -1, 3
    test = run.test.sort_values(["section", "file"])
    assert test["score"].tolist() == pytest.approx([0.0, 0.0, 0.0, 4.0, 0.5, 2.5, -1.0, 1.5])
    assert run.fit.sort_values(["section", "file"])["score"].tolist() == pytest.approx([-1.0, 1.0, -1.0, 1.0])


def test_fusion_checks_its_runs() -> None:
    a = run_table([1.0, 3.0], [2.0, 4.0, 0.0, 6.0])
    other = a.assign(file=a["file"].str.replace("t3", "t9"))
    with pytest.raises(ValueError, match=r"second did not score the same test clips as first: 2 differ \(fan/section_00/t3"):
        fuse([a, other], names=["first", "second"])
    with pytest.raises(ValueError, match="different years"):
        fuse([a, run_table([1.0, 3.0], [2.0, 4.0, 0.0, 6.0], year=2023)])
    with pytest.raises(ValueError, match="one positive weight per run: 2 runs"):
        fuse([a, a], weights=[1.0])
    with pytest.raises(ValueError, match="at least 2 runs"):
        fuse([a])


def test_asd_fuse_on_two_finished_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_2022(tmp_path / "data", machines=("fan", "valve"), sections=(0, 1), n_train=6, n_test=2, seconds=2.0)
    runs = {}
    for name, extra in (("floor", []), ("raw", ["callbacks.inlier.standardize=false", "callbacks.inlier.model.k=2"])):
        cfg = compose_train(["experiment=logmel_knn", *local_copy(root, tmp_path), "data.ground_truth=null", "logger=none",
                             "callbacks.inlier.plots=false", "callbacks.inlier.bundle_dir=null", *extra], tmp_path / name)
        train(cfg)
        runs[name] = tmp_path / name
    floor = read_clip_scores(runs["floor"])
    # every test clip and every fit clip of both machine types, once
    assert (floor["split"] == "test").sum() == 2 * 2 * 2 * 2 * 2 and (floor["split"] == "train").sum() == 2 * 2 * 7

    out = tmp_path / "fused"
    assert fuse_main([str(runs["floor"]), str(runs["raw"] / "submission"), "--weights", "2", "1", "--out", str(out)]) == 0
    assert "official score" in capsys.readouterr().out
    assert json.loads((out / "fusion.json").read_text())["weights"] == [2.0, 1.0]
    fused = read_clip_scores(out)
    expected = fuse([floor, read_clip_scores(runs["raw"])], weights=[2, 1])
    merged = fused.merge(pd.concat([expected.test, expected.fit]), on=["machine", "section", "file"])
    assert len(merged) == len(fused) == len(floor) and np.allclose(merged["score_x"], merged["score_y"])
    # the fused folder is an ordinary submission: asd-evaluate gives its official score
    assert evaluate_main(["--year", "2022", "--scores", str(out), "--root", str(root), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["official_score"] == pytest.approx(report["official_score"])
    # a run fused with itself ranks every section's clips as the run does
    shutil.copytree(runs["floor"], tmp_path / "copy")
    assert fuse_main([str(runs["floor"]), str(tmp_path / "copy"), "--out", str(tmp_path / "self")]) == 0
    alone = json.loads((runs["floor"] / "submission" / "scores.json").read_text())["rows"]
    twice = json.loads((tmp_path / "self" / "scores.json").read_text())["rows"]
    assert [r["auc_source"] for r in twice] == pytest.approx([r["auc_source"] for r in alone])


def test_asd_fuse_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "old" / "submission").mkdir(parents=True)
    assert fuse_main([str(tmp_path / "old"), str(tmp_path / "old"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no clip_scores.csv here or in submission/" in err
