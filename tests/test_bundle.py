"""Model bundle and asd-score: round trip, section resolution and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asd_lightning.deploy import ModelBundle
from asd_lightning.deploy.bundle import section_from_name
from asd_lightning.deploy.cli import main as score_main
from conftest import write_wav

def test_section_from_name() -> None:
    assert section_from_name("section_02_source_test_normal_0001_a_1.wav") == 2
    assert section_from_name("eval/section_03_0007.wav") == 3
    assert section_from_name("normal_id_04_00000012.wav") == 4  # 2020 machine IDs
    assert section_from_name("recording.wav") is None


def test_round_trip_scores_with_the_saved_models(bundle: ModelBundle, bundle_dir: Path, tmp_path: Path,
                                                 capsys) -> None:
    loaded = ModelBundle.load(bundle_dir)
    wav = tmp_path / "rec" / "section_01_target_test_normal_0000.wav"
    write_wav(wav, 3.0, seed=4)
    wave = sf.read(wav, dtype="int16")[0]
    by_hand = bundle.scorers[1]([bundle.embed(wave)])[0]  # the bundle before saving
    table = loaded.score_files([wav])
    assert table.loc[0, "section"] == 1 and table.loc[0, "score"] == pytest.approx(by_hand)
    assert loaded.embed(wave).shape == ((3 * 16000 // 512 + 1 - 64) // 8 + 1, 1280)
    assert score_main(["--bundle", str(bundle_dir), str(wav), "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "section_01_target_test_normal_0000.wav" in out and "scored in" in out
    assert (tmp_path / "s.csv").read_text().startswith("file,section,score,decision")


def test_bad_inputs_are_clear_errors(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    plain, short = tmp_path / "recording.wav", tmp_path / "section_00_short.wav"
    write_wav(plain, 3.0)
    write_wav(short, 0.5)
    # a file that cannot be scored: exit 3, the file and the reason on stderr
    assert score_main(["--bundle", str(bundle_dir), str(plain)]) == 3
    assert "recording.wav: no section_XX in the file name; pass --section" in capsys.readouterr().err
    assert score_main(["--bundle", str(bundle_dir), str(plain), "--section", "7"]) == 3
    assert "section 07 is not in this bundle (sections [0, 1])" in capsys.readouterr().err
    assert score_main(["--bundle", str(bundle_dir), str(short)]) == 3
    # 64 frames of hop 512 need 63 x 512 samples
    assert "section_00_short.wav: too short to score: 8000 samples (0.500 s), one analysis window of this " \
           "bundle needs 32256 (2.016 s)" in capsys.readouterr().err
    loud = tmp_path / "section_00_44k.wav"
    sf.write(loud, np.zeros(3 * 44100, dtype=np.int16), 44100, subtype="PCM_16")
    assert score_main(["--bundle", str(bundle_dir), str(loud)]) == 3
    assert "section_00_44k.wav: sample rate is 44100 Hz, expected 16000 Hz (set --resample to convert it)" \
        in capsys.readouterr().err
    assert score_main(["--bundle", str(bundle_dir), str(loud), "--resample"]) == 0
    # nothing to do at all: exit 2
    assert score_main(["--bundle", str(tmp_path), str(plain)]) == 2
    assert "not a model bundle folder" in capsys.readouterr().err
    assert score_main(["--bundle", str(bundle_dir), str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
