"""Parsing of every DCASE layout into the clip index, and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from asd_lightning.data.clip_index import ClipIndexError, build_clip_index, parse_attributes
from asd_lightning.data.ground_truth import GroundTruthError
from conftest import make_2022, write_wav


def touch(path: Path) -> None:
    write_wav(path, seconds=0.05)


def test_2022_dev_eval_and_ground_truth(dataset_2022: Path) -> None:
    index = build_clip_index(dataset_2022, 2022, ground_truth=dataset_2022 / "ground_truth")
    fan = index[index["machine"] == "fan"]
    # dev: 2 sections x (3 source + 1 target) train; eval section 03: 3 train
    assert (fan["split"] == "train").sum() == 2 * 4 + 3
    # dev test: 2 sections x 2 domains x 2 labels x 2 clips; eval: 4 clips
    assert (fan["split"] == "test").sum() == 16 + 4
    row = fan[fan["file"] == "section_01_target_test_anomaly_0001_a_0_b_1.wav"].iloc[0]
    assert (row.section, row.domain, row.split, row.label, row["clip"]) == (1, "target", "test", "anomaly", 1)
    assert row.attributes == {"a": "0", "b": "1"} and row.attribute_string == "a_0_b_1"
    assert row.relpath == "dev_data/fan/test/section_01_target_test_anomaly_0001_a_0_b_1.wav"
    ev = fan[(fan["section"] == 3) & (fan["split"] == "test")].set_index("file")
    # ground truth: label i % 2, domain i // 2
    assert ev.loc["section_03_0001.wav", "label"] == "anomaly"
    assert ev.loc["section_03_0002.wav", "label"] == "normal"
    assert ev.loc["section_03_0002.wav", "domain"] == "target"
    assert ev.loc["section_03_0000.wav", "domain"] == "source"


def test_eval_clips_without_ground_truth_are_unknown(dataset_2022: Path) -> None:
    index = build_clip_index(dataset_2022, 2022, sections=[3], splits=["test"])
    assert len(index) == 8 and set(index["label"]) == {"unknown"} and set(index["domain"]) == {"unknown"}


def test_selection_by_machine_section_split(dataset_2022: Path) -> None:
    index = build_clip_index(dataset_2022, 2022, machine_types=["valve"], sections=[1], splits=["train"])
    assert set(index["machine"]) == {"valve"} and set(index["section"]) == {1} and set(index["split"]) == {"train"}
    assert len(index) == 4


def test_2021_layout_with_domain_test_folders(tmp_path: Path) -> None:
    base = tmp_path / "dev_data" / "pump"
    touch(base / "train" / "section_00_source_train_normal_0000_strength_1_ambient.wav")
    touch(base / "train" / "section_00_target_train_normal_0000_strength_3_ambient.wav")
    touch(base / "source_test" / "section_00_source_test_anomaly_0000.wav")
    touch(base / "target_test" / "section_00_target_test_normal_0007.wav")
    ev = tmp_path / "eval_data" / "pump"
    touch(ev / "source_test" / "section_03_source_test_0000.wav")
    touch(ev / "target_test" / "section_03_target_test_0000.wav")
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "ground_truth_pump_section_03_source_test.csv").write_text("section_03_source_test_0000.wav,1\n")
    (gt / "ground_truth_pump_section_03_target_test.csv").write_text("section_03_target_test_0000.wav,0\n")
    index = build_clip_index(tmp_path, 2021, ground_truth=gt).set_index("file")
    assert index.loc["section_00_source_train_normal_0000_strength_1_ambient.wav", "attributes"] == {
        "tokens": "strength_1_ambient"}
    assert index.loc["section_00_target_test_normal_0007.wav", ["domain", "label", "clip"]].tolist() == [
        "target", "normal", 7]
    assert index.loc["section_03_source_test_0000.wav", ["domain", "label"]].tolist() == ["source", "anomaly"]
    assert index.loc["section_03_target_test_0000.wav", ["domain", "label"]].tolist() == ["target", "normal"]


def test_2021_domain_folder_mismatch_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "fan" / "source_test" / "section_00_target_test_normal_0000.wav"
    touch(tmp_path / "fan" / "train" / "section_00_source_train_normal_0000_x.wav")
    touch(bad)
    with pytest.raises(ClipIndexError, match="section_00_target_test_normal_0000.wav"):
        build_clip_index(tmp_path, 2021)


def test_2020_layout(tmp_path: Path) -> None:
    touch(tmp_path / "ToyCar" / "train" / "normal_id_01_00000000.wav")
    touch(tmp_path / "ToyCar" / "test" / "anomaly_id_01_00000012.wav")
    touch(tmp_path / "ToyCar" / "test" / "id_05_00000003.wav")
    (tmp_path / "eval_data_list.csv").write_text("ToyCar\nid_05_00000003.wav,1\n")
    index = build_clip_index(tmp_path, 2020, ground_truth=tmp_path / "eval_data_list.csv").set_index("file")
    assert index.loc["anomaly_id_01_00000012.wav", ["section", "split", "label", "clip"]].tolist() == [
        1, "test", "anomaly", 12]
    assert index.loc["id_05_00000003.wav", ["section", "label"]].tolist() == [5, "anomaly"]


def test_2023_uses_the_2022_names_and_2024_no_attribute(tmp_path: Path) -> None:
    touch(tmp_path / "bearing" / "train" / "section_00_source_train_normal_0042_vel_16_loc_A.wav")
    touch(tmp_path / "slider" / "train" / "section_00_source_train_normal_0001_noAttribute.wav")
    touch(tmp_path / "slider" / "test" / "section_00_0001.wav")
    index = build_clip_index(tmp_path, 2024).set_index("file")
    assert index.loc["section_00_source_train_normal_0042_vel_16_loc_A.wav", "attributes"] == {
        "vel": "16", "loc": "A"}
    assert index.loc["section_00_source_train_normal_0001_noAttribute.wav", "attributes"] == {}
    assert index.loc["section_00_0001.wav", "label"] == "unknown"


def test_off_pattern_name_error_and_warn(dataset_2022: Path) -> None:
    stray = dataset_2022 / "dev_data" / "fan" / "train" / "recording_final.wav"
    touch(stray)
    with pytest.raises(ClipIndexError, match=r"recording_final\.wav.*does not match the DCASE 2022 layout"):
        build_clip_index(dataset_2022, 2022)
    with pytest.warns(UserWarning, match="recording_final.wav"):
        index = build_clip_index(dataset_2022, 2022, on_unmatched="warn")
    assert "recording_final.wav" not in set(index["file"])


def test_train_clip_in_test_folder_is_rejected(tmp_path: Path) -> None:
    touch(tmp_path / "fan" / "train" / "section_00_source_train_normal_0000_a_1.wav")
    touch(tmp_path / "fan" / "test" / "section_00_source_train_normal_0001_a_1.wav")
    with pytest.raises(ClipIndexError, match="folder 'test/'"):
        build_clip_index(tmp_path, 2022)


def test_missing_root_and_machine_and_layout(tmp_path: Path, dataset_2022: Path) -> None:
    with pytest.raises(ClipIndexError, match="does not exist"):
        build_clip_index(tmp_path / "nowhere", 2022)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipIndexError, match=r"no <machine>/\{train/test\} folders"):
        build_clip_index(tmp_path / "empty", 2022)
    with pytest.raises(ClipIndexError, match=r"\['pump'\] not found.*\['fan', 'valve'\]"):
        build_clip_index(dataset_2022, 2022, machine_types=["pump"])


def test_ground_truth_errors(dataset_2022: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ground_truth_fan_section_03_test.csv"
    bad.write_text("section_03_0000.wav,1\nsection_03_0001.wav,maybe\n")
    with pytest.raises(GroundTruthError, match=r"ground_truth_fan_section_03_test.csv, line 2"):
        build_clip_index(dataset_2022, 2022, ground_truth=bad)
    conflict = tmp_path / "c" / "ground_truth_fan_section_00_test.csv"
    conflict.parent.mkdir()
    conflict.write_text("section_00_source_test_normal_0000_a_0_b_0.wav,1\n")
    with pytest.raises(GroundTruthError, match="ground truth says anomaly but the file name says normal"):
        build_clip_index(dataset_2022, 2022, ground_truth=conflict)


def test_parse_attributes() -> None:
    assert parse_attributes("car_C2_spd_34V_mic_1") == {"car": "C2", "spd": "34V", "mic": "1"}
    assert parse_attributes("m-n_X") == {"m-n": "X"}
    assert parse_attributes("") == {}
    assert parse_attributes("strength_1_ambient") == {"tokens": "strength_1_ambient"}


def test_dev_and_additional_training_copies_merge(tmp_path: Path) -> None:
    make_2022(tmp_path, machines=("fan",), sections=(0,), n_train=1, n_test=1, seconds=0.05, eval_section=3)
    index = build_clip_index(tmp_path, 2022, splits=["train"])
    assert sorted(set(index["section"])) == [0, 3]
    assert {p.split("/")[0] for p in index["relpath"]} == {"dev_data", "eval_data"}
