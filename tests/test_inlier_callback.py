"""InlierModelCallback: per-section inlier scoring by hand, and end to end on a trained encoder."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from asd_lightning.callbacks.inlier_model import InlierModelCallback
from asd_lightning.deploy.cli import main as score_main
from asd_lightning.eval import evaluate_checkpoint
from asd_lightning.metrics import read_submission
from asd_lightning.scoring import GMMInlier, KNNInlier
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train, local_copy


def clip_table() -> pd.DataFrame:
    # section 0: fit clips 0-3 (2 source, 2 target, clip 3 held out as "val"), test clips 4-5
    rows = [(0, "fan", 0, "source", "train"), (1, "fan", 0, "source", "train"), (2, "fan", 0, "target", "train"),
            (3, "fan", 0, "target", "val"), (4, "fan", 0, "source", "test"), (5, "fan", 0, "target", "test")]
    return pd.DataFrame(rows, columns=["clip_id", "machine", "section", "domain", "subset"])


# one 1-D embedding per segment; two segments per clip
FIT = {0: np.array([[0.0], [0.0]]), 1: np.array([[2.0], [2.0]]), 2: np.array([[10.0], [10.0]]),
       3: np.array([[12.0], [14.0]])}
TEST = {4: np.array([[1.0], [5.0]]), 5: np.array([[11.0], [11.0]])}


def scores(frame: pd.DataFrame) -> list[float]:
    return frame.sort_values("clip_id")["score"].tolist()


def test_clip_mean_embedding_1nn_by_hand() -> None:
    cb = InlierModelCallback(model=lambda: KNNInlier(k=1))
    test, fit = cb.score(clip_table(), TEST, FIT)
    # clip means: fit 0, 2, 10, 13; test 3 → nearest 2 (1.0); 11 → nearest 10 (1.0)
    assert scores(test) == pytest.approx([1.0, 1.0])
    # fit clips scored without themselves: 0→2, 2→0, 10→13, 13→10
    assert scores(fit) == pytest.approx([2.0, 2.0, 3.0, 3.0])


def test_fit_scores_cross_fitted_in_folds_of_whole_clips() -> None:
    # clip means 0, 2, 10, 13; k=2. Two folds, clips {0, 2} and {1, 3}, each scored by the other
    # fold's model: 0 → (2, 13); 2 → (0, 10); 10 → (2, 13); 13 → (0, 10)
    two = InlierModelCallback(model=lambda: KNNInlier(k=2), threshold_folds=2)
    assert scores(two.score(clip_table(), TEST, FIT)[1]) == pytest.approx([7.5, 5.0, 5.5, 8.0])
    # five folds on four clips = leave one clip out: 0 → (2, 10); 2 → (0, 10); 10 → (13, 2); 13 → (10, 2)
    loo = InlierModelCallback(model=lambda: KNNInlier(k=2))
    assert scores(loo.score(clip_table(), TEST, FIT)[1]) == pytest.approx([6.0, 5.0, 5.5, 7.0])
    # one fold = in-sample: a 1-NN fit clip finds itself
    one = InlierModelCallback(model=lambda: KNNInlier(k=1), threshold_folds=1)
    assert scores(one.score(clip_table(), TEST, FIT)[1]) == pytest.approx([0.0, 0.0, 0.0, 0.0])


def test_fit_subset_domains_and_per_domain_minimum() -> None:
    held_out = InlierModelCallback(model=lambda: KNNInlier(k=1), fit_subset="val")
    test, fit = held_out.score(clip_table(), TEST, FIT)
    assert scores(test) == pytest.approx([10.0, 2.0])  # only clip 3 (mean 13) is in the model
    # clips outside the model: plain distances; the model's only clip has no other neighbour: 0
    assert scores(fit) == pytest.approx([13.0, 11.0, 3.0, 0.0])
    source_only = InlierModelCallback(model=lambda: KNNInlier(k=1), fit_domains=["source"])
    assert scores(source_only.score(clip_table(), TEST, FIT)[0]) == pytest.approx([1.0, 9.0])
    # per domain, k=2: source model {0, 2}, target model {10, 13}; the minimum of the two
    # (k=2 of 2 fit clips is more than half of them: fitted as asked, recorded as too small)
    per_domain = InlierModelCallback(model=lambda: KNNInlier(k=2, size_guard="warn"), per_domain=True)
    assert scores(per_domain.score(clip_table(), TEST, FIT)[0]) == pytest.approx([2.0, 1.5])
    sizing = per_domain.sizing.set_index("domain")
    assert list(sizing.index) == ["source", "target"] and (sizing["fit_size"] == 2).all()
    assert sizing["used"].tolist() == [{"k": 2}] * 2 and sizing["reason"].str.contains("at most half").all()


def test_model_zscore_puts_domain_models_on_one_scale() -> None:
    # source fit clips at 0, 1, 3 and target fit clips at 10, 14, 20 (one 1-D segment each)
    points = {0: 0.0, 1: 1.0, 2: 3.0, 3: 10.0, 4: 14.0, 5: 20.0, 6: 2.0, 7: 16.0}
    domains = ["source"] * 3 + ["target"] * 3 + ["source", "target"]
    table = pd.DataFrame({"clip_id": list(points), "machine": "fan", "section": 0, "domain": domains,
                          "subset": ["train"] * 6 + ["test"] * 2})
    fit = {i: np.array([[points[i]]]) for i in range(6)}
    test = {i: np.array([[points[i]]]) for i in (6, 7)}
    plain = InlierModelCallback(model=lambda: KNNInlier(k=1), per_domain=True)
    assert scores(plain.score(table, test, fit)[0]) == pytest.approx([1.0, 2.0])
    # leave-one-out 1-NN distances within each domain: source 1, 1, 2; target 4, 4, 6
    src, tgt = np.array([1.0, 1.0, 2.0]), np.array([4.0, 4.0, 6.0])
    z = lambda d, own: (d - own.mean()) / own.std()
    scaled = InlierModelCallback(model=lambda: KNNInlier(k=1), per_domain=True, model_zscore=True)
    test_scores, fit_scores = scaled.score(table, test, fit)
    # 2 is 1 from the source clips and 8 from the target ones; 16 is 13 and 2 away
    assert scores(test_scores) == pytest.approx([min(z(1, src), z(8, tgt)), min(z(13, src), z(2, tgt))])
    assert scores(fit_scores) == pytest.approx([z(1, src), z(1, src), z(2, src), z(4, tgt), z(4, tgt), z(6, tgt)])


def test_standardize_scales_every_dimension_by_the_sections_fit_clips() -> None:
    # fit clip means (0, 0), (2, 200), (4, 400), (6, 600): mean (3, 300), std (√5, 100·√5)
    table = pd.DataFrame({"clip_id": range(5), "machine": "fan", "section": 0, "domain": "source",
                          "subset": ["train"] * 4 + ["test"]})
    fit = {i: np.array([[2.0 * i, 200.0 * i]]) for i in range(4)}
    test = {4: np.array([[3.0, 0.0]])}
    raw = InlierModelCallback(model=lambda: KNNInlier(k=1))
    assert scores(raw.score(table, test, fit)[0]) == pytest.approx([3.0])  # nearest: (0, 0)
    # standardised: (0, -3/√5) is 1 from (-1/√5, -1/√5), the standardised (2, 200)
    scaled = InlierModelCallback(model=lambda: KNNInlier(k=1), standardize=True)
    assert scores(scaled.score(table, test, fit)[0]) == pytest.approx([1.0])
    scorer = scaled.scorers[("fan", 0)]
    assert scorer.center.tolist() == pytest.approx([3.0, 300.0])
    assert scorer.scale.tolist() == pytest.approx([5 ** 0.5, 100 * 5 ** 0.5])
    assert scorer([test[4]]).tolist() == pytest.approx([1.0])  # the scorer alone (bundles) standardises too


def test_z_scored_domain_models_need_three_clips_per_domain() -> None:
    # clip_table(): source clips 0, 1 and target clips 2, 3: too few to put either domain on a scale
    cb = InlierModelCallback(model=lambda: KNNInlier(k=1), per_domain=True, model_zscore=True)
    test, _ = cb.score(clip_table(), TEST, FIT)
    # one pooled 1-NN (distances 1, 1) on the scale of its fit clips' own distances 2, 2, 3, 3
    assert scores(test) == pytest.approx([(1.0 - 2.5) / 0.5] * 2)
    record = cb.sizing.iloc[0]
    assert (record["model"], record["used"], record["fit_size"]) == ("per-domain models", {"per_domain": False}, 4)
    assert record["reason"] == "source has 2 fit clip(s), target has 2 fit clip(s); a z-scored domain model needs 3"
    assert cb.scorers[("fan", 0)].domains == []


def test_segment_scores_aggregated_per_clip_and_zscore() -> None:
    cb = InlierModelCallback(model=lambda: KNNInlier(k=1), aggregation="max")
    test, fit = cb.score(clip_table(), TEST, FIT)
    # segments 1 → 0 is 1 away, 5 → 2 is 3 away: max 3; 11, 11 → 10 or 12: 1
    assert scores(test) == pytest.approx([3.0, 1.0])
    # a fit clip leaves with all its windows: 0,0 → 2; 2,2 → 0; 10,10 → 12; 12 → 10 and 14 → 10: max 4
    assert scores(fit) == pytest.approx([2.0, 2.0, 2.0, 4.0])
    z = InlierModelCallback(model=lambda: KNNInlier(k=1), zscore=True)
    test, fit = z.score(clip_table(), TEST, FIT)
    raw = np.array([2.0, 2.0, 3.0, 3.0])
    assert scores(test) == pytest.approx(list((np.array([1.0, 1.0]) - raw.mean()) / raw.std()))
    assert np.mean(scores(fit)) == pytest.approx(0.0, abs=1e-12)


def test_gmm_crop_scores_aggregated_per_clip_rank_the_clips_by_the_aggregation() -> None:
    """GMM → crop scores → aggregation → clip score, through the callback, on a section where the
    three aggregations rank three test clips three ways. The fit clips' 12 crops (1-D, ±1) give
    a Gaussian of mean 0 and variance 1 (+ reg_covar): a crop at x scores c + x² / 2.
    Catches an aggregation that takes the wrong half of the crops (mean_below_median keeping the
    most anomalous ones), one that ignores the setting (every clip by its mean), and a clip score
    taken over other than the clip's own crops. mean_below_median is what the two-BCE authors'
    code computes (the mean of the upper half of the log-likelihoods, negated)."""
    table = pd.DataFrame({"clip_id": range(6), "machine": "fan", "section": 0, "domain": "source",
                          "subset": ["val"] * 3 + ["test"] * 3})
    fit = {0: [-1.0, 1.0, -1.0, 1.0], 1: [1.0, -1.0, 1.0, -1.0], 2: [-1.0, -1.0, 1.0, 1.0]}
    test = {3: [0.0, 0.0, 3.0, 3.0],  # A: two normal crops, two very anomalous ones
            4: [2.0, 2.0, 2.0, 2.0],  # B: every crop somewhat anomalous
            5: [0.5, 0.5, 2.4, 2.4]}  # C: in between
    as_rows = lambda clips: {i: np.array(x)[:, None] for i, x in clips.items()}  # noqa: E731
    var = 1.0 + 1e-6  # GMMInlier's reg_covar
    nll = lambda x: 0.5 * np.log(2 * np.pi * var) + 0.5 * np.asarray(x) ** 2 / var  # noqa: E731
    c = nll(0.0)
    expected = {"mean": [c + 2.25 / var, c + 2.0 / var, c + 1.5025 / var],  # A > B > C
                "mean_above_median": [c + 4.5 / var, c + 2.0 / var, c + 2.88 / var],  # A > C > B
                "mean_below_median": [c, c + 2.0 / var, c + 0.125 / var]}  # B > C > A
    ranks = {}
    for aggregation, values in expected.items():
        cb = InlierModelCallback(model=lambda: GMMInlier(n_components=1), fit_subset="val", aggregation=aggregation)
        test_scores, fit_scores = cb.score(table, as_rows(test), as_rows(fit))
        assert scores(test_scores) == pytest.approx(values, rel=1e-9)
        # each fit clip scored by the Gaussian of the other two (mean 0, variance 1 again): crops at ±1
        assert scores(fit_scores) == pytest.approx([nll(1.0)] * 3, rel=1e-9)
        ranks[aggregation] = np.argsort(scores(test_scores))[::-1].tolist()
    assert ranks == {"mean": [0, 1, 2], "mean_above_median": [0, 2, 1], "mean_below_median": [1, 2, 0]}
    # the authors' rule on the crops' log-likelihoods: -mean(sorted(ll)[S // 2:])
    authors = [-np.mean(sorted(-nll(x))[2:]) for x in test.values()]
    assert expected["mean_below_median"] == pytest.approx(authors)


def test_clips_with_different_numbers_of_crops_in_one_section_are_aggregated_each_over_its_own() -> None:
    """Fit and test clips of 1, 2 and 3 crops in one section (clips of other lengths cut into
    windows), 1-NN on 1-D crops. Catches a clip aggregation that assumes equal crop counts
    (rows split evenly among the clips: clip 3 would get crops 1, 2 and clip 4 crops 3, 1)."""
    table = pd.DataFrame({"clip_id": range(6), "machine": "fan", "section": 0, "domain": "source",
                          "subset": ["train"] * 3 + ["test"] * 3})
    fit = {0: np.array([[0.0], [0.0]]), 1: np.array([[12.0]]), 2: np.array([[20.0], [20.0], [20.0]])}
    test = {3: np.array([[1.0], [2.0], [9.0]]), 4: np.array([[19.0]]), 5: np.array([[5.0], [16.0]])}
    # crop distances to the nearest of 0, 0, 12, 20, 20, 20: clip 3 (1, 2, 3); clip 4 (1); clip 5 (5, 4)
    # fit clips, each against the others' crops: clip 0 (12, 12); clip 1 (8); clip 2 (8, 8, 8)
    expected = {"mean": ([2.0, 1.0, 4.5], [12.0, 8.0, 8.0]),
                "mean_below_median": ([1.5, 1.0, 4.0], [12.0, 8.0, 8.0]),  # ceil(S / 2) lowest: 2 of 3, 1 of 2
                "median": ([2.0, 1.0, 4.5], [12.0, 8.0, 8.0]),
                "max": ([3.0, 1.0, 5.0], [12.0, 8.0, 8.0])}
    for aggregation, (test_expected, fit_expected) in expected.items():
        cb = InlierModelCallback(model=lambda: KNNInlier(k=1), aggregation=aggregation)
        test_scores, fit_scores = cb.score(table, test, fit)
        assert scores(test_scores) == pytest.approx(test_expected), aggregation
        assert scores(fit_scores) == pytest.approx(fit_expected), aggregation
        # the fitted scorer alone (what a bundle scores with) aggregates alike, in any order of clips
        scorer = cb.scorers[("fan", 0)]
        assert scorer([test[5], test[3], test[4]]).tolist() == pytest.approx([test_expected[i] for i in (2, 0, 1)])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fit_subset"):
        InlierModelCallback(fit_subset="test")
    with pytest.raises(ValueError, match="aggregation"):
        InlierModelCallback(aggregation="sum")
    with pytest.raises(ValueError, match="fit_domains"):
        InlierModelCallback(fit_domains=["elsewhere"])
    with pytest.raises(ValueError, match="threshold_folds"):
        InlierModelCallback(threshold_folds=0)
    cb = InlierModelCallback(fit_subset="val", fit_domains=["source"])
    with pytest.raises(ValueError, match="fan section 00: no val clips"):
        cb.score(clip_table(), TEST, FIT)


def test_inlier_callback_end_to_end_then_asd_eval_with_another_model(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan", "valve"), sections=(0, 1), n_train=6, n_test=2,
                     seconds=2.5, eval_section=3)
    # the AE baseline's bottleneck codes spread after one epoch; a MobileNetV2 trained one epoch on
    # these few clips collapses to one point, whose z-scored rounding noise no two runs reproduce
    data = [*local_copy(root, tmp_path), "data.batch_size=8", "experiment=ae_baseline"]
    cfg = compose_train(data + ["callbacks=inlier", "trainer.max_epochs=1"], tmp_path / "run")
    metrics = train(cfg)
    for name in ("roc", "score_histograms", "embeddings_pca"):  # figures written and non-empty
        image = matplotlib.image.imread(tmp_path / "run" / "submission" / "plots" / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 200 and image[..., :3].std() > 0.05
    submission = tmp_path / "run" / "submission"
    report = json.loads((submission / "scores.json").read_text())
    assert report["official_score"] == pytest.approx(metrics["test/official_score"], abs=1e-6)
    knn = read_submission(submission, 2022)
    assert len(knn) == 2 * (2 * 2 * 2 * 2 + 4) and np.isfinite(knn["score"]).all()

    # the fan bundle alone (asd-score) gives the callback's scores for the same recordings
    bundle = tmp_path / "run" / "bundle" / "fan"
    assert {p.name for p in bundle.iterdir()} >= {"bundle.pt", "bundle.json"}
    assert json.loads((bundle / "bundle.json").read_text())["sections"] == [0, 1, 3]
    out = tmp_path / "asd_score.json"
    assert score_main(["--bundle", str(bundle), str(root / "dev_data" / "fan" / "test"),
                       str(root / "eval_data" / "fan" / "test"), "--out", str(out)]) == 0
    bundled = pd.read_json(out).assign(file=lambda t: t["file"].map(lambda f: Path(f).name))
    expected = knn[knn["machine"] == "fan"].merge(bundled, on="file", suffixes=("", "_bundle"))
    assert len(expected) == 2 * 2 * 2 * 2 + 4
    assert (expected["section"] == expected["section_bundle"]).all()
    assert np.allclose(expected["score_bundle"], expected["score"], rtol=1e-4, atol=1e-6)
    assert expected["score"].std() > 1e3 * 1e-6  # real score differences, not rounding noise
    decisions = pd.read_csv(submission / "decision_result_fan_section_00_test.csv", header=None, names=["file", "d"])
    assert (decisions.merge(bundled, on="file").eval("d == decision")).all()

    # asd-eval: the same checkpoint scored by a GMM on segment scores; the checkpoint is only read
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = (ckpt.read_bytes(), ckpt.stat().st_mtime_ns)
    cfg = compose_train(data + [f"ckpt_path={ckpt}", "callbacks/inlier_model@callbacks.inlier.model=gmm",
                                "callbacks.inlier.model.covariance_type=diag", "callbacks.inlier.aggregation=mean_above_median",
                                "callbacks.inlier.per_domain=false", "callbacks.inlier.model_zscore=false"],
                        tmp_path / "eval", config_name="eval.yaml")
    assert cfg.train is False and cfg.task_name == "eval"
    evaluate_checkpoint(cfg)
    gmm = read_submission(tmp_path / "eval" / "submission", 2022)
    assert (ckpt.read_bytes(), ckpt.stat().st_mtime_ns) == before
    merged = knn.merge(gmm, on=["machine", "section", "file"], suffixes=("_knn", "_gmm"))
    assert len(merged) == len(knn)
    assert not np.allclose(merged["score_knn"], merged["score_gmm"])


def test_asd_eval_needs_an_existing_checkpoint(tmp_path: Path) -> None:
    cfg = compose_train([f"ckpt_path={tmp_path / 'missing.ckpt'}"], tmp_path / "eval", config_name="eval.yaml")
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        evaluate_checkpoint(cfg)
    with pytest.raises(ValueError, match="asd-eval needs the checkpoint to score: ckpt_path="):
        evaluate_checkpoint(compose_train([], tmp_path / "eval", config_name="eval.yaml"))


def test_figures_and_embedding_table_reach_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    import lightning as L
    from lightning.pytorch.loggers import WandbLogger

    from asd_lightning.callbacks.inlier_model import log_embedding_table, log_figures, write_figures

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rng = np.random.default_rng(0)
    scored = pd.DataFrame({
        "file": [f"clip_{i}.wav" for i in range(16)], "machine": "fan", "section": [0, 1] * 8,
        "domain": (["source"] * 4 + ["target"] * 4) * 2, "label": ["normal"] * 8 + ["anomaly"] * 8,
        "score": np.r_[rng.normal(0, 1, 8), rng.normal(2, 1, 8)],
    })
    embeddings = rng.normal(size=(16, 5))
    paths = write_figures(scored, embeddings, 2022, tmp_path / "plots", projection="tsne")
    assert sorted(paths) == ["embeddings_tsne", "roc", "score_histograms"]
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="asd-test")
    trainer = L.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    log_figures(trainer, paths)
    log_embedding_table(trainer, scored, embeddings)
    run_dir = Path(logger.experiment.dir)
    logger.experiment.finish()
    media = sorted(p.name for p in run_dir.rglob("*") if p.is_file() and p.parent.name in ("test", "images"))
    assert any(name.startswith("roc") and name.endswith(".png") for name in media), media
    assert any(name.startswith("embeddings") and name.endswith(".table.json") for name in media), media


def test_missing_fit_clips_fail_before_training(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=4, n_test=1, seconds=2.5)
    cfg = compose_train([f"data.root={root}", "data.machine_types=[fan]", "data.num_workers=0", "data.val_fraction=0",
                         f"data.cache_dir={tmp_path / 'cache'}", "logger=none", "trainer.accelerator=cpu",
                         "experiment=mobilenetv2_baseline", "callbacks=inlier", "callbacks.inlier.fit_subset=val",
                         "trainer.max_epochs=1"], tmp_path / "run")
    with pytest.raises(ValueError, match="fan section 00: no val clips"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained
