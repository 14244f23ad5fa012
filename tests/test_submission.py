"""Submission CSV names, round trips, malformed files, and the gamma decision threshold."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from asd_lightning.metrics import gamma_threshold, read_submission, submission_filename, write_submission


@pytest.mark.parametrize(
    "year, machine, section, domain, expected",
    [
        (2020, "ToyCar", 2, None, "anomaly_score_ToyCar_id_02.csv"),
        (2021, "fan", 0, "target", "anomaly_score_fan_section_00_target_test.csv"),
        (2022, "bearing", 3, None, "anomaly_score_bearing_section_03_test.csv"),
        (2024, "3DPrinter", 0, None, "anomaly_score_3DPrinter_section_00_test.csv"),
    ],
)
def test_submission_filename(year, machine, section, domain, expected):
    assert submission_filename("anomaly_score", year, machine, section, domain) == expected
    decision = expected.replace("anomaly_score", "decision_result")
    assert submission_filename("decision_result", year, machine, section, domain) == decision


def test_submission_filename_errors():
    with pytest.raises(ValueError, match="kind"):
        submission_filename("scores", 2022, "fan", 0)
    with pytest.raises(ValueError, match="per domain"):
        submission_filename("anomaly_score", 2021, "fan", 0)


def frame(year):
    machines = {2020: ["fan", "ToyConveyor"], 2021: ["ToyTrain", "gearbox"], 2022: ["ToyCar", "slider"],
                2023: ["bearing", "valve"], 2024: ["3DPrinter", "HoveringDrone"]}[year]
    rows = []
    for m, machine in enumerate(machines):
        for section in (0, 3):
            for domain in ("source", "target"):
                for clip in (1, 0):  # written unsorted on purpose
                    name = f"section_{section:02d}_{domain}_test_normal_{clip:04d}.wav"
                    if year == 2020:
                        name = f"normal_id_{section:02d}_{domain}_{clip:08d}.wav"
                    rows.append({"machine": machine, "section": section, "domain": domain, "file": name,
                                 "score": 0.1 * clip + m + section / 7 - 1.5, "decision": clip})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("year", [2020, 2021, 2022, 2023, 2024])
def test_round_trip(tmp_path, year):
    df = frame(year)
    paths = write_submission(df, tmp_path, year)
    groups = 8 if year == 2021 else 4
    assert len(paths) == 2 * groups
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    back = read_submission(tmp_path, year)
    assert list(back.columns) == ["machine", "section", "domain", "file", "score", "decision"]
    if year != 2021:
        assert back["domain"].isna().all()
        df = df.drop(columns="domain")
        back = back.drop(columns="domain")
    keys = [c for c in ("machine", "section", "domain", "file") if c in df.columns]
    expected = df.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(back.sort_values(keys).reset_index(drop=True), expected[back.columns])


def test_written_rows_are_sorted_and_exact(tmp_path):
    df = frame(2022)
    write_submission(df.drop(columns="decision"), tmp_path, 2022)
    lines = (tmp_path / "anomaly_score_slider_section_03_test.csv").read_text().splitlines()
    scores = [0.1 * c + 1 + 3 / 7 - 1.5 for c in (0, 0, 1, 1)]
    assert lines == [
        f"section_03_source_test_normal_0000.wav,{scores[0]!r}",
        f"section_03_source_test_normal_0001.wav,{scores[2]!r}",
        f"section_03_target_test_normal_0000.wav,{scores[1]!r}",
        f"section_03_target_test_normal_0001.wav,{scores[3]!r}",
    ]
    assert not list(tmp_path.glob("decision_result_*"))
    assert "decision" not in read_submission(tmp_path, 2022).columns


def test_other_csvs_are_ignored(tmp_path):
    write_submission(frame(2022), tmp_path, 2022)
    (tmp_path / "scores.csv").write_text("not,a,submission\n")
    assert len(read_submission(tmp_path, 2022)) == 16


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.wav,0.5\nb.wav,high\n", "line 2: value 'high' is not a number"),
        ("a.wav,0.5\nb.wav,0.1,0.2\n", "line 2: expected 2 columns"),
        ("a.wav\n", "line 1: expected 2 columns"),
        ("a.wav,0.5\nb.wav,0.7\na.wav,0.1\n", "line 3: duplicated file 'a.wav'"),
        ("a.wav,nan\n", "line 1: invalid anomaly_score value"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "anomaly_score_fan_section_00_test.csv", text)
    with pytest.raises(ValueError) as error:
        read_submission(tmp_path, 2022)
    assert str(path) in str(error.value) and message in str(error.value)


def test_bad_decision_value(tmp_path):
    write(tmp_path / "anomaly_score_fan_section_00_test.csv", "a.wav,0.5\n")
    path = write(tmp_path / "decision_result_fan_section_00_test.csv", "a.wav,2\n")
    with pytest.raises(ValueError, match=f"{path}, line 1: invalid decision_result value '2'"):
        read_submission(tmp_path, 2022)


def test_decision_file_must_match_scores(tmp_path):
    write(tmp_path / "anomaly_score_fan_section_00_test.csv", "a.wav,0.5\nb.wav,0.2\n")
    write(tmp_path / "decision_result_fan_section_00_test.csv", "a.wav,1\n")
    with pytest.raises(ValueError, match="decision_result_fan_section_00_test.csv: its clips do not match"):
        read_submission(tmp_path, 2022)
    (tmp_path / "decision_result_fan_section_00_test.csv").unlink()
    write(tmp_path / "anomaly_score_pump_section_00_test.csv", "c.wav,0.5\n")
    write(tmp_path / "decision_result_pump_section_00_test.csv", "c.wav,0\n")
    with pytest.raises(ValueError, match=r"decision_result_fan_section_00_test.csv is missing \(its anomaly_score "
                                         r"file anomaly_score_fan_section_00_test.csv is there\)"):
        read_submission(tmp_path, 2022)


@pytest.mark.parametrize(
    "name, year",
    [
        ("anomaly_score_fan_section_00_source_test.csv", 2022),  # 2021 name read as 2022
        ("anomaly_score_fan_section_00_test.csv", 2021),  # no domain
        ("anomaly_score_fan_section_00_test.csv", 2020),
        ("anomaly_score_fan_section_0_test.csv", 2022),
    ],
)
def test_unmatched_file_name(tmp_path, name, year):
    path = write(tmp_path / name, "a.wav,0.5\n")
    with pytest.raises(ValueError, match=f"{path}: file name does not follow the {year} naming"):
        read_submission(tmp_path, year)


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no anomaly_score"):
        read_submission(tmp_path, 2022)


def test_write_rejects_duplicates_and_missing_domain(tmp_path):
    df = frame(2022)
    with pytest.raises(ValueError, match="duplicated file"):
        write_submission(pd.concat([df, df.iloc[:1]]), tmp_path, 2022)
    with pytest.raises(ValueError, match="missing \\['domain'\\]"):
        write_submission(df.drop(columns="domain"), tmp_path, 2021)


def test_gamma_threshold_recovers_the_true_quantile():
    rng = np.random.default_rng(0)
    shape, scale = 2.0, 1.5
    true = scipy.stats.gamma.ppf(0.9, shape, scale=scale)  # 5.8346
    sample = rng.gamma(shape, scale, size=5000)
    assert gamma_threshold(sample) == pytest.approx(true, rel=0.03)
    assert gamma_threshold(sample, quantile=0.5) == pytest.approx(scipy.stats.gamma.ppf(0.5, shape, scale=scale), rel=0.03)
    # Non-positive scores are shifted before the fit and shifted back: same threshold, moved.
    assert gamma_threshold(sample - 10.0) == pytest.approx(true - 10.0, abs=0.2)


def test_gamma_threshold_errors():
    with pytest.raises(ValueError, match="cannot fit"):
        gamma_threshold([0.3] * 10)
    with pytest.raises(ValueError, match="quantile"):
        gamma_threshold([0.1, 0.2, 0.3], quantile=1.0)
    with pytest.raises(ValueError, match="finite"):
        gamma_threshold([0.1, np.nan, 0.3])


def test_equal_fit_scores_still_give_a_scored_run_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A collapsed encoder scores every fit clip 0: the run keeps its scores and tables (AUC from
    the test scores), the threshold is that value and the log says why."""
    import logging

    from asd_lightning.metrics.results import score_run

    test = pd.DataFrame({"machine": "fan", "section": 0, "domain": ["source"] * 4, "label": ["normal", "normal",
                         "anomaly", "anomaly"], "file": [f"section_00_source_test_{i}.wav" for i in range(4)],
                         "score": [0.0, 0.1, 0.5, 0.7], "split": "test"})
    fit = pd.DataFrame({"machine": "fan", "section": 0, "domain": "source", "label": "normal",
                        "file": [f"section_00_source_train_{i}.wav" for i in range(5)], "score": 0.0, "split": "train"})
    with caplog.at_level(logging.WARNING, logger="asd_lightning.metrics.results"):
        run = score_run(test, fit, 2021)
    assert run.thresholds == {"fan": 0.0} and run.test["decision"].tolist() == [0, 1, 1, 1]
    assert "all 5 fit-clip scores equal 0" in caplog.text
    with pytest.raises(ValueError, match="all 5 training scores equal"):
        gamma_threshold(fit["score"].to_numpy())
