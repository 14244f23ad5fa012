"""``asd-evaluate`` end to end on tiny DCASE-style folders with real 16-bit 16 kHz WAV files."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd_lightning.metrics import evaluate, write_submission
from asd_lightning.metrics.cli import main

# (domain, label, score) of one section, as in test_metrics_official.section_2022:
# AUC(source) 0.875, AUC(target) 0.75, pAUC 33/38.
CLIPS = [("source", "normal", 0.2), ("source", "normal", 0.4), ("source", "anomaly", 0.8), ("source", "anomaly", 0.9),
         ("target", "normal", 0.5), ("target", "normal", 0.6), ("target", "anomaly", 0.3), ("target", "anomaly", 0.7)]


def wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")


def dev_dataset(root, machines=("fan", "ToyCar")):
    """2022 dev layout: <root>/<machine>/test/section_00_<domain>_test_<label>_<NNNN>_a_1.wav."""
    rows = []
    for m, machine in enumerate(machines):
        for i, (domain, label, score) in enumerate(CLIPS):
            name = f"section_00_{domain}_test_{label}_{i:04d}_a_1.wav"
            wav(root / machine / "test" / name)
            rows.append({"machine": machine, "section": 0, "domain": domain, "file": name,
                         "label": label, "score": score + 0.01 * m})
    return pd.DataFrame(rows)


def eval_dataset(root, gt_dir, machine="bearing"):
    """2022 evaluation layout: section_03_NNNN.wav + official ground-truth CSVs."""
    rows = []
    for i, (domain, label, score) in enumerate(CLIPS):
        name = f"section_03_{i:04d}.wav"
        wav(root / machine / "test" / name)
        rows.append({"machine": machine, "section": 3, "domain": domain, "file": name, "label": label, "score": score})
    df = pd.DataFrame(rows)
    (gt_dir / "ground_truth_domain").mkdir(parents=True)
    csv_name = f"ground_truth_{machine}_section_03_test.csv"
    (gt_dir / csv_name).write_text("".join(f"{r.file},{int(r.label == 'anomaly')}\n" for r in df.itertuples()))
    (gt_dir / "ground_truth_domain" / csv_name).write_text(
        "".join(f"{r.file},{int(r.domain == 'target')}\n" for r in df.itertuples())
    )
    return df


def test_dev_set_end_to_end(tmp_path, capsys):
    truth = dev_dataset(tmp_path / "data")
    write_submission(truth.drop(columns=["label", "domain"]), tmp_path / "scores", 2022)
    code = main(["--year", "2022", "--scores", str(tmp_path / "scores"), "--root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert code == 0
    expected = evaluate(truth, 2022)
    assert expected.rows["auc_source"].tolist() == pytest.approx([0.875, 0.875])
    assert expected.format_table() in out
    assert "ToyCar" in out and "fan" in out and "87.50" in out
    data = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert data["official_score"] == pytest.approx(expected.official_score)
    assert data["official_score"] == pytest.approx(3 / (1 / 0.875 + 1 / 0.75 + 38 / 33))
    assert data["machines"]["fan"]["auc_target_hmean"] == pytest.approx(0.75)
    assert (tmp_path / "eval" / "scores.csv").is_file()


def test_machine_type_selection_and_default_out(tmp_path, capsys):
    truth = dev_dataset(tmp_path / "data")
    scores_dir = tmp_path / "scores"
    write_submission(truth[truth["machine"] == "fan"].drop(columns=["label"]), scores_dir, 2022)
    # only fan has scores: ToyCar clips are not evaluated by default
    assert main(["--year", "2022", "--scores", str(scores_dir), "--root", str(tmp_path / "data")]) == 0
    data = json.loads((scores_dir / "scores.json").read_text())
    assert list(data["machines"]) == ["fan"]
    # folders of unscored machine types are not read: a stray file there does not matter; the table
    # now in the --scores folder is never overwritten, so this one goes to --out
    wav(tmp_path / "data" / "ToyCar" / "test" / "notes_copy.wav")
    out = ["--out", str(tmp_path / "eval")]
    assert main(["--year", "2022", "--scores", str(scores_dir), "--root", str(tmp_path / "data"), *out]) == 0
    # asking for ToyCar too reports its unscored clips
    code = main(["--year", "2022", "--scores", str(scores_dir), "--root", str(tmp_path / "data"),
                 "--machine-types", "fan", "ToyCar", *out])
    assert code == 2
    assert "notes_copy.wav" in capsys.readouterr().err  # ToyCar is read now: its stray file is named
    (tmp_path / "data" / "ToyCar" / "test" / "notes_copy.wav").unlink()
    code = main(["--year", "2022", "--scores", str(scores_dir), "--root", str(tmp_path / "data"),
                 "--machine-types", "fan", "ToyCar", *out])
    assert code == 2
    assert "8 test clip(s) have no score: ToyCar/section_00_source_test_anomaly_0002_a_1.wav, " in capsys.readouterr().err


def test_evaluation_set_needs_ground_truth(tmp_path, capsys):
    truth = eval_dataset(tmp_path / "eval_data", tmp_path / "gt")
    write_submission(truth.drop(columns=["label", "domain"]), tmp_path / "scores", 2022)
    args = ["--year", "2022", "--scores", str(tmp_path / "scores"), "--root", str(tmp_path / "eval_data")]

    assert main(args) == 2
    err = capsys.readouterr().err
    assert "8 clip(s) have an unknown label or domain" in err and "--ground-truth" in err
    assert err.count("\n") == 1

    assert main(args + ["--ground-truth", str(tmp_path / "gt"), "--out", str(tmp_path / "out")]) == 0
    assert "section_03" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "scores.json").read_text())
    expected = evaluate(truth, 2022)
    assert data["official_score"] == pytest.approx(expected.official_score)
    assert data["rows"][0]["auc_source"] == pytest.approx(0.875)
    assert data["rows"][0]["auc_target"] == pytest.approx(0.75)


def test_missing_and_extra_scores(tmp_path, capsys):
    truth = dev_dataset(tmp_path / "data", machines=("fan",))
    root = str(tmp_path / "data")
    write_submission(truth.iloc[1:].drop(columns=["label", "domain"]), tmp_path / "missing", 2022)
    assert main(["--year", "2022", "--scores", str(tmp_path / "missing"), "--root", root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asd-evaluate: error: 1 test clip(s) have no score: fan/section_00_source_test_normal_0000_a_1.wav")
    assert err.count("\n") == 1 and "Traceback" not in err

    extra = pd.concat([truth, truth.iloc[:1].assign(file="section_00_source_test_normal_0099_a_1.wav")])
    write_submission(extra.drop(columns=["label", "domain"]), tmp_path / "extra", 2022)
    assert main(["--year", "2022", "--scores", str(tmp_path / "extra"), "--root", root]) == 2
    assert "1 scored file(s) are not test clips of the dataset: fan/section_00_source_test_normal_0099" in capsys.readouterr().err


def test_bad_scores_folder(tmp_path, capsys):
    dev_dataset(tmp_path / "data", machines=("fan",))
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "anomaly_score_fan_section_00_test.csv").write_text("a.wav,oops\n")
    assert main(["--year", "2022", "--scores", str(tmp_path / "scores"), "--root", str(tmp_path / "data")]) == 2
    assert "line 1: value 'oops' is not a number" in capsys.readouterr().err


def test_2021_joins_by_domain(tmp_path, capsys):
    """2021 dev layout: test clips in source_test/ and target_test/, one score file per domain."""
    rows = []
    for i, (domain, label, score) in enumerate(CLIPS):
        name = f"section_00_{domain}_test_{label}_{i:04d}.wav"
        wav(tmp_path / "data" / "gearbox" / f"{domain}_test" / name)
        rows.append({"machine": "gearbox", "section": 0, "domain": domain, "file": name, "label": label, "score": score})
    truth = pd.DataFrame(rows)
    paths = write_submission(truth.drop(columns="label"), tmp_path / "scores", 2021)
    assert sorted(p.name for p in paths) == [
        "anomaly_score_gearbox_section_00_source_test.csv", "anomaly_score_gearbox_section_00_target_test.csv"
    ]
    assert main(["--year", "2021", "--scores", str(tmp_path / "scores"), "--root", str(tmp_path / "data")]) == 0
    data = json.loads((tmp_path / "scores" / "scores.json").read_text())
    # source: normals .2 .4 vs anomalies .8 .9 -> 1; target: normals .5 .6 vs anomalies .3 .7 -> 2/4
    assert [r["auc"] for r in data["rows"]] == pytest.approx([1.0, 0.5])
    assert data["official_score"] == pytest.approx(evaluate(truth, 2021).official_score)


def test_sections_option_evaluates_dev_sections_beside_unlabelled_eval_clips(tmp_path, capsys):
    truth = dev_dataset(tmp_path / "data", machines=("bearing",))
    eval_dataset(tmp_path / "data" / "eval_data", tmp_path / "gt")  # section 03, no --ground-truth given
    write_submission(truth.drop(columns=["label", "domain"]), tmp_path / "scores", 2022)
    args = ["--year", "2022", "--scores", str(tmp_path / "scores"), "--root", str(tmp_path / "data")]
    assert main(args) == 2
    assert "8 test clip(s) have no score: bearing/section_03_0000.wav" in capsys.readouterr().err
    assert main(args + ["--sections", "0"]) == 0
    data = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert data["official_score"] == pytest.approx(evaluate(truth, 2022).official_score)
