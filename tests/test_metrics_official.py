"""Official DCASE scores on small hand-computed examples.

pAUC is sklearn's McClish-standardised partial AUC at max_fpr = 0.1:
    pAUC = 0.5 * (1 + (A - A_min) / (A_max - A_min)),  A_min = 0.5 * 0.1**2 = 0.005,  A_max = 0.1
where A is the area under the (linearly interpolated) ROC curve for FPR in [0, 0.1].
"""

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asd_lightning.metrics import evaluate

EPS = sys.float_info.epsilon

# Cases of (anomaly scores, normal scores) with 2 anomalies and 5 normals (one normal = FPR 0.2).
# PERFECT: anomalies on top, ROC reaches TPR 1 at FPR 0: A = 0.1 -> pAUC = 1; AUC = 1.
PERFECT = ([0.9, 0.8], [0.5, 0.4, 0.3, 0.2, 0.1])
# REVERSED: TPR stays 0 up to FPR 1: A = 0 -> pAUC = 0.5 * (1 - 0.005 / 0.095) = 9/19; AUC = 0.
REVERSED = ([0.0, 0.1], [0.5, 0.4, 0.3, 0.2, 0.9])
# MIXED: order A N N A N N N -> ROC (0, .5) then (.2, .5): TPR = 0.5 on [0, 0.1], A = 0.05,
# pAUC = 0.5 * (1 + 0.045 / 0.095) = 14/19; AUC: 0.9 beats 5 normals, 0.4 beats 4 -> 9/10.
MIXED = ([0.9, 0.4], [0.8, 0.3, 0.2, 0.1, 0.0])
# TIED: top anomaly ties a normal -> ROC segment (0, 0) -> (0.2, 0.5): TPR(0.1) = 0.25,
# A = 0.5 * 0.1 * 0.25 = 0.0125, pAUC = 0.5 * (1 + 0.0075 / 0.095) = 41/76;
# AUC: 0.9 ties one normal (0.5) and beats 4, 0.2 beats 1 -> 5.5/10 = 0.55.
TIED = ([0.9, 0.2], [0.9, 0.5, 0.4, 0.3, 0.1])
HAND = {"PERFECT": (1.0, 1.0), "REVERSED": (0.0, 9 / 19), "MIXED": (0.9, 14 / 19), "TIED": (0.55, 41 / 76)}


def clips(case, machine="fan", section=0, domain="source"):
    anomalies, normals = case
    return [
        {"machine": machine, "section": section, "domain": domain, "label": label, "score": score}
        for label, scores in ((1, anomalies), (0, normals)) for score in scores
    ]


def hm(*values):
    return len(values) / sum(1 / v for v in values)


@pytest.mark.parametrize("name", list(HAND))
def test_hand_computed_auc_and_pauc_match_sklearn(name):
    case = globals()[name]
    y = [1] * len(case[0]) + [0] * len(case[1])
    s = case[0] + case[1]
    auc, pauc = HAND[name]
    assert roc_auc_score(y, s) == pytest.approx(auc)
    assert roc_auc_score(y, s, max_fpr=0.1) == pytest.approx(pauc)
    row = evaluate(pd.DataFrame(clips(case)), 2020).rows.iloc[0]
    assert (row["auc"], row["pauc"]) == (pytest.approx(auc), pytest.approx(pauc))


def test_2020_per_id_and_arithmetic_means():
    df = pd.DataFrame(clips(MIXED, "fan", 0) + clips(TIED, "fan", 2) + clips(PERFECT, "pump", 0))
    report = evaluate(df, 2020)
    assert list(report.rows[["machine", "section"]].itertuples(index=False, name=None)) == [
        ("fan", 0), ("fan", 2), ("pump", 0)
    ]
    assert report.rows["auc"].tolist() == pytest.approx([0.9, 0.55, 1.0])
    assert report.rows["pauc"].tolist() == pytest.approx([14 / 19, 41 / 76, 1.0])
    fan = report.machines.set_index("machine").loc["fan"]
    assert fan["auc_amean"] == pytest.approx(0.725)
    assert fan["pauc_amean"] == pytest.approx(97 / 152)  # (56/76 + 41/76) / 2
    assert "auc_hmean" not in report.machines.columns
    assert report.overall["auc_amean"] == pytest.approx(2.45 / 3)
    assert report.overall["pauc_amean"] == pytest.approx(173 / 228)  # (56 + 41 + 76) / 76 / 3
    assert report.official_score == pytest.approx((2.45 + 173 / 76) / 6)


def test_2020_ignores_domain_column():
    df = pd.DataFrame(clips(MIXED)).drop(columns="domain")
    assert evaluate(df, 2020).official_score == pytest.approx((0.9 + 14 / 19) / 2)


def test_2021_per_domain_and_one_hmean_over_all_values():
    df = pd.DataFrame(clips(MIXED, domain="source") + clips(TIED, domain="target"))
    report = evaluate(df, 2021)
    assert report.rows["domain"].tolist() == ["source", "target"]
    assert report.rows["auc"].tolist() == pytest.approx([0.9, 0.55])
    assert report.rows["pauc"].tolist() == pytest.approx([14 / 19, 41 / 76])
    assert report.overall["auc_hmean"] == pytest.approx(hm(0.9, 0.55))
    assert report.overall["auc_amean"] == pytest.approx(0.725)
    assert report.overall["pauc_hmean"] == pytest.approx(hm(14 / 19, 41 / 76))
    expected = 4 / (1 / 0.9 + 19 / 14 + 1 / 0.55 + 76 / 41)
    assert report.official_score == pytest.approx(expected)
    # one hmean over the union, not the arithmetic mean of the per-column hmeans
    assert report.official_score != pytest.approx((hm(0.9, 0.55) + hm(14 / 19, 41 / 76)) / 2)
    # the same clips pooled over both domains (2020 rules) give another AUC
    assert evaluate(df, 2020).rows["auc"].iloc[0] != pytest.approx(0.9)


def test_2021_epsilon_floor_when_an_auc_is_zero():
    df = pd.DataFrame(clips(REVERSED, domain="source") + clips(TIED, domain="target"))
    report = evaluate(df, 2021)
    assert report.rows["auc"].iloc[0] == 0.0  # reported unfloored
    expected = 4 / (1 / EPS + 19 / 9 + 1 / 0.55 + 76 / 41)  # ~ 4 * eps
    assert report.official_score == pytest.approx(expected, rel=1e-12)
    assert 0 < report.official_score < 5 * EPS
    assert report.overall["auc_hmean"] == pytest.approx(2 / (1 / EPS + 1 / 0.55), rel=1e-12)
    assert report.overall["auc_amean"] == pytest.approx(0.275)


def section_2022():
    """Section 00: source normals .2 .4, source anomalies .8 .9, target normals .5 .6, target anomalies .3 .7.
    Section 01: source normals .1 .2, target normals .9 .3, anomalies .5 (source) .6 (target)."""
    rows = []
    for section, parts in (
        (0, [("source", 0, [0.2, 0.4]), ("source", 1, [0.8, 0.9]), ("target", 0, [0.5, 0.6]), ("target", 1, [0.3, 0.7])]),
        (1, [("source", 0, [0.1, 0.2]), ("target", 0, [0.9, 0.3]), ("source", 1, [0.5]), ("target", 1, [0.6])]),
    ):
        for domain, label, scores in parts:
            rows += [{"machine": "fan", "section": section, "domain": domain, "label": label, "score": s} for s in scores]
    return pd.DataFrame(rows)


def test_2022_auc_uses_all_anomalies_of_the_section():
    df = section_2022()
    report = evaluate(df, 2022)
    s0, s1 = report.rows.iloc[0], report.rows.iloc[1]
    # Section 00, AUC(source): anomalies {.8,.9,.3,.7} vs source normals {.2,.4}:
    # .8 .9 .7 beat both (6 pairs), .3 beats .2 (1) -> 7/8.
    # Wrong way (source anomalies {.8,.9} only): 4/4 = 1.
    assert s0["auc_source"] == pytest.approx(0.875)
    # AUC(target): same anomalies vs target normals {.5,.6}: 6 pairs -> 6/8.
    # Wrong way (target anomalies {.3,.7} only): .7 beats both -> 2/4 = 0.5.
    assert s0["auc_target"] == pytest.approx(0.75)
    sec0 = df[df["section"] == 0]
    for domain, right, wrong in (("source", 0.875, 1.0), ("target", 0.75, 0.5)):
        subset = sec0[sec0["domain"] == domain]
        assert roc_auc_score(subset["label"], subset["score"]) == pytest.approx(wrong)
        assert right != pytest.approx(wrong)
    # pAUC on all 8 clips: A A A N N N A N -> TPR 0.75 at FPR 0 (first FP at 0.25):
    # A = 0.075, pAUC = 0.5 * (1 + 0.07 / 0.095) = 33/38; the source/target subsets rank alike.
    assert s0["pauc"] == pytest.approx(33 / 38)
    assert s0["pauc_source"] == pytest.approx(33 / 38)
    assert s0["pauc_target"] == pytest.approx(33 / 38)
    # Section 01: AUC(source) = 1; AUC(target): .5 and .6 beat .3 only -> 2/4;
    # pAUC: a normal (.9) on top -> A = 0 -> 9/19; pAUC(source) = 1; pAUC(target) = 9/19.
    assert [s1[c] for c in ("auc_source", "auc_target", "pauc", "pauc_source", "pauc_target")] == pytest.approx(
        [1.0, 0.5, 9 / 19, 1.0, 9 / 19]
    )
    fan = report.machines.set_index("machine").loc["fan"]
    assert fan["auc_source_hmean"] == pytest.approx(hm(0.875, 1.0))
    assert fan["auc_target_amean"] == pytest.approx(0.625)
    expected = 6 / (1 / 0.875 + 1 / 0.75 + 38 / 33 + 1 + 2 + 19 / 9)
    assert report.official_score == pytest.approx(expected)
    assert report.official_score == pytest.approx(0.686592, abs=1e-6)


@pytest.mark.parametrize("year", [2023, 2024, 2025])
def test_later_years_use_2022_rules(year):
    df = section_2022()
    assert evaluate(df, year).official_score == pytest.approx(evaluate(df, 2022).official_score)
    assert list(evaluate(df, year).rows.columns[:3]) == ["machine", "section", "auc_source"]


def test_decision_metrics_with_epsilon_guards():
    df = section_2022()
    df = df[df["section"] == 0].assign(decision=lambda d: (d["score"] > 0.55).astype(int))
    # decided anomalous: .8 .9 (source anomalies), .6 (target normal), .7 (target anomaly)
    # 2022, whole section: tp 3, fp 1, fn 1 -> precision = recall = F1 = 0.75
    row = evaluate(df, 2022).rows.iloc[0]
    assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((0.75, 0.75, 0.75))
    # 2021, per domain: source tp 2 fp 0 fn 0 -> 1; target tp 1 fp 1 fn 1 -> 0.5
    rows = evaluate(df, 2021).rows
    assert rows["precision"].tolist() == pytest.approx([1.0, 0.5])
    assert rows["f1"].tolist() == pytest.approx([1.0, 0.5])
    # no positive decision: tp = fp = 0 -> 0 / max(0, eps) = 0, no division error
    row = evaluate(df.assign(decision=0), 2022).rows.iloc[0]
    assert (row["precision"], row["recall"], row["f1"]) == (0.0, 0.0, 0.0)


def test_string_labels_equal_integer_labels():
    df = section_2022()
    named = df.assign(label=df["label"].map({0: "normal", 1: "anomaly"}))
    assert evaluate(named, 2022).official_score == evaluate(df, 2022).official_score


@pytest.mark.parametrize("bad", [-1, "unknown"])
def test_unknown_labels_raise(bad):
    df = section_2022().astype({"label": object})
    df.loc[0, "label"] = bad
    with pytest.raises(ValueError, match="labels must be"):
        evaluate(df, 2022)


def test_missing_class_names_the_subset():
    df = pd.DataFrame(clips(MIXED, domain="source") + clips(([], [0.1, 0.2]), domain="target"))
    with pytest.raises(ValueError, match=r"no anomalous .*machine 'fan', section 0, domain 'target'"):
        evaluate(df, 2021)
    no_target_normals = section_2022().query("not (section == 0 and domain == 'target' and label == 0)")
    with pytest.raises(ValueError, match=r"machine 'fan', section 0 \(target normals"):
        evaluate(no_target_normals, 2022)


def test_unknown_domain_raises():
    df = section_2022()
    df.loc[0, "domain"] = "unknown"
    with pytest.raises(ValueError, match="domains must be"):
        evaluate(df, 2022)


def test_report_outputs(tmp_path):
    report = evaluate(section_2022(), 2022)
    metrics = report.metrics_dict()
    assert metrics["test/official_score"] == pytest.approx(0.686592, abs=1e-6)
    assert metrics["test/fan/section_00/auc_source"] == pytest.approx(0.875)
    assert metrics["test/fan/auc_source_hmean"] == pytest.approx(hm(0.875, 1.0))
    assert metrics["test/auc_target_amean"] == pytest.approx(0.625)
    assert report.metrics_dict(prefix="eval_")["eval_fan/section_01/pauc"] == pytest.approx(9 / 19)
    report_2021 = evaluate(pd.DataFrame(clips(MIXED, domain="source") + clips(TIED, domain="target")), 2021)
    assert report_2021.metrics_dict()["test/fan/section_00/target/pauc"] == pytest.approx(41 / 76)
    assert evaluate(pd.DataFrame(clips(TIED, section=2)), 2020).metrics_dict()["test/fan/id_02/auc"] == pytest.approx(0.55)

    table = report.format_table()
    assert "section_00" in table and "87.50" in table and "harmonic mean" in table
    assert table.splitlines()[-1].endswith("68.66")

    csv_path, json_path = report.save(tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["official_score"] == pytest.approx(report.official_score)
    assert data["machines"]["fan"]["auc_target_hmean"] == pytest.approx(hm(0.75, 0.5))
    assert data["rows"][0] == {
        "machine": "fan", "section": 0, "auc_source": 0.875, "auc_target": 0.75,
        "pauc": pytest.approx(33 / 38), "pauc_source": pytest.approx(33 / 38), "pauc_target": pytest.approx(33 / 38),
    }
    frame = pd.read_csv(csv_path)
    assert frame["level"].tolist() == ["section", "section", "machine", "machine", "overall", "overall", "official"]
    assert frame["statistic"].fillna("").tolist()[2:] == ["hmean", "amean", "hmean", "amean", "hmean"]
    assert frame["official_score"].iloc[-1] == pytest.approx(report.official_score)
    assert math.isnan(frame["official_score"].iloc[0])
    assert np.allclose(frame["auc_source"].iloc[:2], [0.875, 1.0])
