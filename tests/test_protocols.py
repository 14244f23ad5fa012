"""Evaluation protocols: the two-BCE paper's DCASE 2021 setting (source-domain training, IDs
03-05 reported, its Table II measure) and the official tables, from composition to a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asd_lightning.data import DCASE2021DataModule, DCASE2022DataModule
from asd_lightning.metrics import read_submission
from asd_lightning.metrics.cli import main as evaluate_main
from asd_lightning.metrics.official import ScoreReport
from asd_lightning.metrics.two_bce_measure import TwoBCEMeasure
from asd_lightning.synth import SynthConfig, write_synthetic_dataset
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train


def hm(*values: float) -> float:
    return len(values) / sum(1 / v for v in values)


def test_two_bce_measure_by_hand() -> None:
    rows = pd.DataFrame({"machine": ["fan", "fan", "valve"], "section": [3, 4, 3], "domain": ["source"] * 3,
                         "auc": [0.8, 0.9, 0.7], "pauc": [0.6, 0.5, 0.7]})
    report = ScoreReport(year=2021, rows=rows, machines=pd.DataFrame(), overall={}, official_score=0.0)
    measure = TwoBCEMeasure.from_report(report)
    by_section = measure.sections.set_index(["machine", "section"])["hmean"]
    assert by_section[("fan", 3)] == pytest.approx(hm(0.8, 0.6))
    assert by_section[("valve", 3)] == pytest.approx(0.7)
    assert measure.machines.set_index("machine")["hmean"]["fan"] == pytest.approx(hm(0.8, 0.6, 0.9, 0.5))
    assert measure.all == pytest.approx(hm(0.8, 0.6, 0.9, 0.5, 0.7, 0.7))
    metrics = measure.metrics_dict()
    assert metrics["test/two_bce/fan/section_04/hmean"] == pytest.approx(hm(0.9, 0.5))
    assert "All/Har-mean: " in measure.format_table()
    # 2022+: a section's values are its official AUC(source), AUC(target) and pAUC
    rows22 = pd.DataFrame({"machine": ["fan"], "section": [0], "auc_source": [0.9], "auc_target": [0.6],
                           "pauc": [0.7], "pauc_source": [0.0], "pauc_target": [0.0]})
    measure22 = TwoBCEMeasure.from_report(ScoreReport(2022, rows22, pd.DataFrame(), {}, 0.0))
    assert measure22.all == pytest.approx(hm(0.9, 0.6, 0.7))


def test_two_bce_experiments_default_to_the_papers_dcase2021_protocol(tmp_path: Path) -> None:
    pump = compose_train(["experiment=two_bce/pump"], tmp_path)  # no other override needed
    assert pump.data._target_.endswith("DCASE2021DataModule") and pump.data.year == 2021
    assert (list(pump.data.train_domains), list(pump.data.test_sections), list(pump.data.test_domains)) == \
        (["source"], [3, 4, 5], ["source"])
    assert pump.score_protocol == "two_bce" and pump.callbacks.inlier.protocol == "two_bce"
    tuning = compose_train(["experiment=two_bce/pump", "protocol=two_bce_dcase2021_tuning"], tmp_path)
    assert list(tuning.data.test_sections) == [0, 1, 2] and tuning.data.year == 2021
    fan22 = compose_train(["experiment=two_bce/fan", "protocol=dcase2022"], tmp_path)  # one override
    assert fan22.data.year == 2022 and fan22.data.test_sections is None and fan22.data.test_domains is None
    assert list(fan22.data.train_domains) == ["source", "target"] and fan22.score_protocol == "official"
    assert fan22.model.product_weight == 0.1  # still fan's Table I settings
    plain = compose_train(["experiment=mobilenetv2_baseline"], tmp_path)
    assert plain.score_protocol == "official" and plain.data.test_domains is None


def test_test_domains_select_clips_and_need_known_domains(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "s21", SynthConfig(
        year=2021, machine_types=("fan",), dev_sections=(0,), eval_sections=(3,), source_train_clips=3,
        target_train_clips=1, test_clips=2, clip_seconds=0.5, difficulty="easy"))
    dm = DCASE2021DataModule(root=root, machine_types=["fan"], cache_dir=tmp_path / "c", progress=False,
                             train_domains=["source"], test_sections=[3], test_domains=["source"],
                             ground_truth=root / "ground_truth", train_crop={"seconds": 0.25})
    dm.setup()
    test = dm.clips[dm.clips["subset"] == "test"]
    assert set(test["section"]) == {3} and set(test["domain"]) == {"source"} and len(test) == 4
    assert set(test["label"]) == {"normal", "anomaly"}  # labelled by the ground truth
    train_clips = dm.clips[dm.clips["subset"] != "test"]
    assert set(train_clips["domain"]) == {"source"} and set(train_clips["section"]) == {0, 3}
    anonymised = make_2022(tmp_path / "d22", machines=("fan",), sections=(0,), n_train=2, n_test=1, eval_section=3)
    with pytest.raises(ValueError, match="data.ground_truth"):
        DCASE2022DataModule(root=anonymised, machine_types=["fan"], cache_dir=tmp_path / "c", progress=False,
                            test_domains=["source"]).setup()
    with pytest.raises(ValueError, match="no test clips"):
        DCASE2022DataModule(root=anonymised, machine_types=["fan"], cache_dir=tmp_path / "c", progress=False,
                            test_sections=[5]).setup()
    with pytest.raises(ValueError, match="test_domains"):
        DCASE2022DataModule(root=anonymised, test_domains=["both"])


TINY = ["data.features.n_mels=32", "data.features.n_fft=512", "data.features.hop_length=256",
        "data.train_crop.seconds=0.5", "data.test_segments.seconds=0.5", "data.test_segments.num=3",
        "model.encoder.model_name=efficientnet_b0", "model.encoder.embedding_dim=16", "data.batch_size=8",
        "trainer.max_epochs=1", "callbacks.inlier.model.n_components=1", "callbacks.inlier.plots=false",
        "data.num_workers=0", "logger=csv", "trainer.accelerator=cpu"]


@pytest.mark.slow
def test_two_bce_paper_protocol_end_to_end(tmp_path: Path) -> None:
    """experiment=two_bce/fan on a DCASE 2021-layout copy with evaluation IDs and their ground
    truth: trains on source clips only, scores only the evaluation IDs' source clips, prints
    and saves the paper's measure beside the official table; asd-evaluate agrees."""
    root = write_synthetic_dataset(tmp_path / "s21", SynthConfig(
        year=2021, machine_types=("fan", "valve"), dev_sections=(0,), eval_sections=(3, 4), source_train_clips=6,
        target_train_clips=2, test_clips=3, clip_seconds=1.0, difficulty="easy"))
    cfg = compose_train(["experiment=two_bce/fan", f"data.root={root}", f"data.ground_truth={root / 'ground_truth'}",
                         "data.test_sections=[3,4]", f"data.cache_dir={tmp_path / 'cache'}", *TINY], tmp_path / "run")
    metrics = train(cfg)
    out = tmp_path / "run" / "submission"
    scores = read_submission(out, 2021)
    assert set(zip(scores["section"], scores["domain"])) == {(3, "source"), (4, "source")}
    assert len(scores) == 2 * 2 * 3  # two IDs, source only, 3 normal + 3 anomalous
    measure = json.loads((out / "two_bce_measure.json").read_text())
    # source domain only: All/Har-mean is the official 2021 harmonic mean of the same AUCs and pAUCs
    assert measure["all_hmean"] == pytest.approx(metrics["test/official_score"], abs=1e-6)
    assert measure["all_hmean"] == pytest.approx(metrics["test/two_bce/all_hmean"], abs=1e-6)
    assert set(measure["machines"]) == {"fan"} and np.isfinite(measure["machines"]["fan"])
    assert evaluate_main(["--year", "2021", "--scores", str(out), "--root", str(root), "--ground-truth",
                          str(root / "ground_truth"), "--machine-types", "fan", "--sections", "3", "4",
                          "--domains", "source", "--protocol", "two_bce", "--out", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval" / "two_bce_measure.json").read_text())
    assert again["all_hmean"] == pytest.approx(measure["all_hmean"], abs=1e-6)
