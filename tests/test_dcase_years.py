"""DCASE 2023-2026: year facts, attribute-less names, evaluator file lists, supplemental clips,
two-microphone clips, the synthetic layouts of each year and end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from asd_lightning.data import DCASE2022DataModule, build_clip_index
from asd_lightning.data.clip_index import ClipIndexError, parse_clip_name
from asd_lightning.data.decode import AudioDecodeError, DecodeOptions, decode
from asd_lightning.data.ground_truth import load_ground_truth
from asd_lightning.data.years import year_facts
from asd_lightning.metrics.official import evaluate
from asd_lightning.models.base import ASDMethod
from asd_lightning.models.near_far_consistency import near_far_consistency
from asd_lightning.synth import SynthConfig, write_synthetic_dataset
from asd_lightning.synth.stereo import far_channel
from asd_lightning.train import train
from conftest import write_wav
from test_train import compose_train


# ---------------------------------------------------------------- year facts and names
def test_machine_type_sets_of_each_year_are_data() -> None:
    # the official baseline's datasets/machine_type_<year>_{dev,eval}.yaml
    assert set(year_facts(2024).eval) == {"3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone",
                                          "HairDryer", "ToothBrush", "RoboticArm", "BrushlessMotor"}
    assert set(year_facts(2025).eval) == {"ToyRCCar", "ToyPet", "HomeCamera", "AutoTrash", "Polisher",
                                          "ScrewFeeder", "BandSealer", "CoffeeGrinder"}
    assert set(year_facts(2026).dev) == {"ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu",
                                         "valveEmu"}
    assert set(year_facts(2026).eval) == {"ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander"}
    assert year_facts(2026).channels == {"near": 0, "far": 1} and year_facts(2026).default_channel == "near"
    assert [year_facts(y).layout for y in (2020, 2021, 2022, 2023, 2024, 2025, 2026)] == [2020, 2021] + [2022] * 5
    assert "supplemental" in year_facts(2025).splits and "supplemental" not in year_facts(2024).splits


@pytest.mark.parametrize("name, attrs", [
    ("section_00_source_train_normal_0000_.wav", ""),  # the official README's attribute-less form
    ("section_00_source_train_normal_0000_noAttribute.wav", "noAttribute"),
    ("section_00_target_train_normal_0012_mdl_B_spd_2.wav", "mdl_B_spd_2"),
])
def test_attribute_less_names_parse(name: str, attrs: str) -> None:
    for year in (2024, 2025, 2026):
        parsed = parse_clip_name(name, year, "train")
        assert parsed is not None and parsed.attribute_string == attrs and parsed.label == "normal"


def test_supplemental_folder_is_its_own_split(tmp_path: Path) -> None:
    base = tmp_path / "eval_data" / "AutoTrash"
    for name in ("section_00_source_train_normal_0000_.wav", "section_00_target_train_normal_0000_.wav"):
        write_wav(base / "train" / name, 0.1)
    write_wav(base / "test" / "section_00_0000.wav", 0.1)
    for name in ("section_00_machine_0001_.wav", "section_00_noise_0001_.wav", "section_00_noise_0002_.wav"):
        write_wav(base / "supplemental" / name, 0.1)
    index = build_clip_index(tmp_path, 2025)
    assert index.groupby(["split", "kind"]).size().to_dict() == {
        ("supplemental", "machine"): 1, ("supplemental", "noise"): 2, ("test", "clip"): 1, ("train", "clip"): 2}
    assert set(index.loc[index["split"] == "supplemental", "label"]) == {"unknown"}
    write_wav(base / "supplemental" / "section_00_clean_0001_.wav", 0.1)
    with pytest.raises(ClipIndexError, match="does not match the DCASE 2025 layout for folder 'supplemental/'"):
        build_clip_index(tmp_path, 2025)


def test_evaluator_file_lists_and_attribute_correspondence(tmp_path: Path) -> None:
    """Anonymised clips get label, domain and attributes from ``eval_data_list_2025.csv`` and
    from the 2024 evaluator's full-name CSVs; ``noAttribute`` clips get theirs from the
    correspondence files."""
    for machine in ("AutoTrash", "Scanner"):
        for i in range(2):
            write_wav(tmp_path / "eval_data" / machine / "test" / f"section_00_{i:04d}.wav", 0.1)
    write_wav(tmp_path / "dev_data/bearing/train/section_00_source_train_normal_0000_noAttribute.wav", 0.1)
    gt = tmp_path / "gt"
    (gt / "ground_truth_attributes").mkdir(parents=True)
    (gt / "eval_data_list_2025.csv").write_text(
        "AutoTrash\nsection_00_0000.wav,section_00_target_test_anomaly_0012_id_C1_spd_2.wav\n"
        "section_00_0001.wav,section_00_source_test_normal_0031_.wav\n")
    (gt / "ground_truth_attributes/ground_truth_Scanner_section_00_test.csv").write_text(
        "section_00_0000.wav,section_00_source_test_anomaly_0001_mdl_A\n"
        "section_00_0001.wav,section_00_target_test_normal_0002_mdl_B\n")
    (gt / "bearing").mkdir()
    (gt / "bearing/attributes_00_train_correspondence.csv").write_text(
        "source_file_name,target_file_name\n"
        "section_00_source_train_normal_0000_pro_A_vel_12.wav,section_00_source_train_normal_0000_noAttribute.wav\n")
    index = build_clip_index(tmp_path, 2025, ground_truth=gt).set_index(["machine", "file"])
    assert tuple(index.loc[("AutoTrash", "section_00_0000.wav"), ["label", "domain", "attribute_string"]]) == (
        "anomaly", "target", "id_C1_spd_2")
    assert tuple(index.loc[("AutoTrash", "section_00_0001.wav"), ["label", "domain", "attribute_string"]]) == (
        "normal", "source", "")
    assert tuple(index.loc[("Scanner", "section_00_0001.wav"), ["label", "domain", "attribute_string"]]) == (
        "normal", "target", "mdl_B")
    bearing = index.loc[("bearing", "section_00_source_train_normal_0000_noAttribute.wav")]
    assert bearing["attribute_string"] == "pro_A_vel_12" and bearing["attributes"] == {"pro": "A", "vel": "12"}
    without = build_clip_index(tmp_path, 2025).set_index(["machine", "file"])
    assert without.loc[("AutoTrash", "section_00_0000.wav"), "label"] == "unknown"
    (gt / "eval_data_list_2025.csv").write_text("AutoTrash\nsection_00_0000.wav,not_a_name.wav\n")
    with pytest.raises(ValueError, match="line 2: expected a label .* or a full DCASE file name"):
        load_ground_truth(gt)


@pytest.mark.parametrize("year", [2023, 2024, 2025, 2026])
def test_official_score_2023_to_2026_by_hand(year: int) -> None:
    """Per machine type (section 00): AUC(source) on source normals + all anomalies, AUC(target)
    likewise, pAUC on every clip; official = harmonic mean of all of them (the 2024 evaluator)."""
    rows = [("a", "source", 1, 0.9), ("a", "target", 1, 0.8), ("a", "source", 0, 0.1), ("a", "source", 0, 0.85),
            ("a", "target", 0, 0.2), ("a", "target", 0, 0.3)]
    rows += [("b", d, lab, s) for d, lab, s in (("source", 1, 0.9), ("target", 1, 0.8), ("source", 0, 0.1),
                                                ("target", 0, 0.2))]
    report = evaluate(pd.DataFrame(rows, columns=["machine", "domain", "label", "score"]).assign(section=0), year)
    a = report.rows.set_index("machine").loc["a"]
    # source: anomalies {.9, .8} vs normals {.1, .85}: 3 of 4 pairs ordered; target: all 4
    assert a["auc_source"] == pytest.approx(0.75) and a["auc_target"] == pytest.approx(1.0)
    # all clips: ROC (0, .5) -> (.25, .5): area to FPR .1 = .05; McClish .5 (1 + (.05 - .005) / (.1 - .005))
    assert a["pauc"] == pytest.approx(0.5 * (1 + 0.045 / 0.095))
    values = [0.75, 1.0, 0.5 * (1 + 0.045 / 0.095), 1.0, 1.0, 1.0]
    assert report.official_score == pytest.approx(len(values) / sum(1 / v for v in values))


# ---------------------------------------------------------------- synthetic layouts
def tiny(year: int, **overrides) -> SynthConfig:
    settings = dict(year=year, dev_sections=(0,), eval_sections=(), source_train_clips=4, target_train_clips=1,
                    test_clips=2, clip_seconds=0.5, supplemental_clips=2)
    settings.update(overrides)
    return SynthConfig(**settings)


def test_synthetic_layout_of_each_year(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "s24", tiny(2024, machine_types=("fan", "gearbox"), eval_sections=(1,),
                                                           clip_seconds=0.25))
    assert sorted(p.name for p in (root / "dev_data/gearbox/train").iterdir())[0] == \
        "section_00_source_train_normal_0000_noAttribute.wav"
    index = build_clip_index(root, 2024, ground_truth=root / "ground_truth")
    # hidden attributes come back from the correspondence files, eval labels from eval_data_list_2024.csv
    hidden = index[(index["machine"] == "gearbox") & (index["section"] == 0)]
    assert hidden["attribute_string"].str.fullmatch(r"volt_[\d.]+_wt_\d+").all()
    evaluation = index[(index["section"] == 1) & (index["split"] == "test")]
    assert len(evaluation) == 16 and set(evaluation["label"]) == {"normal", "anomaly"}
    assert set(evaluation["domain"]) == {"source", "target"}
    assert (root / "ground_truth/eval_data_list_2024.csv").read_text().startswith("fan\nsection_01_0000.wav,")

    root = write_synthetic_dataset(tmp_path / "s25", tiny(2025, machine_types=("bearing",), clip_seconds=0.25))
    assert sorted(p.name for p in (root / "dev_data/bearing/supplemental").iterdir()) == [
        "section_00_machine_0001_.wav", "section_00_machine_0002_.wav", "section_00_noise_0001_.wav",
        "section_00_noise_0002_.wav"]
    index = build_clip_index(root, 2025)
    assert (index["split"] == "supplemental").sum() == 4

    root = write_synthetic_dataset(tmp_path / "s26", tiny(2026, machine_types=("sliderEmu",)))
    names = sorted(p.name for p in (root / "dev_data/sliderEmu/train").iterdir())
    assert names[0] == "section_00_source_train_normal_0000_.wav"
    audio, sr = sf.read(root / "dev_data/sliderEmu/train" / names[0], dtype="float32")
    assert audio.shape == (8000, 2) and sr == 16000
    near, far = audio.T
    # the far microphone hears the near signal 2-6 ms later (the room's direct path), plus noise
    xcorr = np.correlate(far, near, mode="full")[len(near) - 1:len(near) + 200]
    lag = int(np.abs(xcorr).argmax())
    assert 32 <= lag <= 96 and np.abs(xcorr).max() / np.sqrt((near ** 2).sum() * (far ** 2).sum()) > 0.2
    assert not np.allclose(near, far)


def test_asd_synth_year_2026_writes_the_whole_layout(tmp_path: Path) -> None:
    from asd_lightning.synth.cli import main

    assert main(["--year", "2026", "--out", str(tmp_path / "d"), "--train-clips", "1", "--target-train-clips", "1",
                 "--test-clips", "1", "--seconds", "0.2"]) == 0
    root = tmp_path / "d"
    assert sorted(p.name for p in (root / "dev_data").iterdir()) == ["fan", "gearboxEmu", "valveEmu"]
    assert {p.name[:10] for p in (root / "dev_data/fan/test").iterdir()} == {"section_00"}
    assert sorted(p.name for p in (root / "eval_data/fan/test").iterdir())[0] == "section_01_0000.wav"
    assert sf.info(next((root / "eval_data/fan/test").iterdir())).channels == 2
    index = build_clip_index(root, 2026, ground_truth=root / "ground_truth")
    assert (index["label"] != "unknown").all() and (index["domain"] != "unknown").all()
    with pytest.raises(SystemExit):
        main(["--year", "2019", "--out", str(tmp_path / "x")])


def test_synth_defaults_follow_the_year() -> None:
    config = SynthConfig().replace(year=2026)  # what data=synthetic data.year=2026 asks for
    assert config.machine_types == ("fan", "gearboxEmu", "valveEmu") and config.dev_sections == (0,)
    assert config.eval_sections == (1,)
    kept = SynthConfig(machine_types=("fan",), dev_sections=(0, 2)).replace(year=2024)
    assert kept.machine_types == ("fan",) and kept.dev_sections == (0, 2) and kept.eval_sections == (1,)


def test_far_channel_is_the_near_one_through_a_room_plus_noise() -> None:
    t = np.arange(16000) / 16000
    near = (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)
    far = far_channel(near, np.random.default_rng(1), 16000)
    spectrum = np.abs(np.fft.rfft(far[0]))
    assert spectrum.argmax() == 440  # the machine's tone survives the room
    assert np.abs(far).max() <= 0.98 and not np.allclose(far[0] / far[0].std(), near[0] / near[0].std(), atol=0.1)


# ---------------------------------------------------------------- channels
def test_channel_names_choose_what_decode_keeps(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    data = write_wav(path, 0.1, channels=2)
    left, right = (np.round(data[:, c] * 32767).astype(np.int16) for c in (0, 1))
    assert np.abs(decode(path, DecodeOptions(channel=1)).astype(int) - right).max() <= 1
    assert np.abs(decode(path, DecodeOptions()).astype(int) - left).max() <= 1  # first, as before
    with pytest.raises(AudioDecodeError, match="has 2 channel\\(s\\), channel 2 was asked for"):
        decode(path, DecodeOptions(channel="2"))


class ShapeProbe(ASDMethod):
    """Records what training and testing give it; embeds the channel means of each window."""

    def __init__(self, channel_mode: str = "per_channel") -> None:
        super().__init__(optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
        self.channel_mode = channel_mode
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple] = []
        self.waves: list[torch.Tensor] = []
        self.test_out: list[dict] = []

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        self.seen.append(("embed", tuple(features.shape)))
        return features.mean(dim=(-1, -2)) * self.weight

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append(("train", tuple(batch["features"].shape), tuple(batch["class"].shape)))
        self.waves.append(batch["wave"].detach().clone())
        return self.weight * batch["features"].mean()

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        self.test_out.append(super().test_step(batch, batch_idx))
        return self.test_out[-1]


def stereo_module(root: Path, tmp_path: Path, **kwargs) -> DCASE2022DataModule:
    settings = dict(root=root, year=2026, machine_types=["fan"], cache_dir=tmp_path / "cache", batch_size=4,
                    eval_batch_size=4, progress=False, val_fraction=0.0, train_crop={"seconds": 0.25}, num_workers=0,
                    features={"n_mels": 16, "n_fft": 256, "hop_length": 128})
    settings.update(kwargs)
    return DCASE2022DataModule(**settings)


def fit_and_test(model: ASDMethod, dm: DCASE2022DataModule, tmp_path: Path) -> None:
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    model.score_by_embeddings = True  # what the inlier callback asks for: the test step's embeddings
    trainer.test(model, datamodule=dm, verbose=False)


@pytest.fixture(scope="module")
def stereo_root(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("s26") / "d", tiny(2026, machine_types=("fan",)))


def test_two_channels_through_a_trainer(stereo_root: Path, tmp_path: Path) -> None:
    """near (default) and far select a channel; both gives per-channel features: unfolded for a
    per-channel method's training, side by side for its embeddings; paired methods get both."""
    dm = stereo_module(stereo_root, tmp_path)
    assert dm.channel_names == ["near"]
    dm.prepare_data()
    dm.setup()
    clip = dm.clips.index[dm.clips["split"] == "train"][0]
    stored = np.asarray(dm.table.waveform(clip))
    on_disk = sf.read(dm.clips.at[clip, "path"], dtype="int16")[0]
    assert np.array_equal(stored, on_disk[:, 0])
    far = stereo_module(stereo_root, tmp_path, channels="far")
    far.setup()
    assert np.array_equal(np.asarray(far.table.waveform(clip)), on_disk[:, 1])

    both = stereo_module(stereo_root, tmp_path, channels="both")
    model = ShapeProbe()
    fit_and_test(model, both, tmp_path)
    trains = [s for s in model.seen if s[0] == "train"]
    assert trains and all(s[1][:2] == (8, 1) and s[2] == (8,) for s in trains)  # 4 clips x 2 channels
    wave = model.waves[0]  # [h1 near, h1 far, h2 near, h2 far]: the crops of one clip, two microphones
    assert not torch.equal(wave[0], wave[2]) and wave.shape == (8, 4000)
    # testing: each channel embedded alone ([4 clips x 2, 1, mels, frames]), then side by side
    assert all(s[1][:2] == (8, 1) for s in model.seen if s[0] == "embed")
    assert all(o["segment_embeddings"].shape[1:] == (1, 2) for o in model.test_out)

    paired = ShapeProbe(channel_mode="paired")
    fit_and_test(paired, both, tmp_path)
    assert all(s[1][:2] == (4, 2) for s in paired.seen if s[0] == "train")
    assert all(s[1][:2] == (4, 2) for s in paired.seen if s[0] == "embed")

    assert stereo_module(stereo_root, tmp_path, decode={"channel": "mean"}).channel_names == ["mean"]
    with pytest.raises(ValueError, match="data.channels must be one of near, far or both"):
        stereo_module(stereo_root, tmp_path, channels="left")
    with pytest.raises(ValueError, match="DCASE 2025 files have no named channels"):
        stereo_module(stereo_root, tmp_path, year=2025, channels="near")


# ---------------------------------------------------------------- supplemental clips
@pytest.fixture(scope="module")
def supplemental_root(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("s25") / "d", tiny(2025, machine_types=("fan",)))


def test_supplemental_split_and_noise_mixing_through_a_trainer(supplemental_root: Path, tmp_path: Path) -> None:
    plain = stereo_module(supplemental_root, tmp_path, year=2025)
    plain.setup()
    assert set(plain.clips["split"]) == {"train", "test"}  # indexed, never used unless asked
    noisy = stereo_module(supplemental_root, tmp_path, year=2025, supplemental={"noise_snr_db": [6, 6]})
    noisy.setup()
    supplemental = noisy.clips[noisy.clips["subset"] == "supplemental"]
    assert set(supplemental["kind"]) == {"noise"} and len(supplemental) == 2
    assert not set(supplemental["clip_id"]) & (set(noisy.rows("fit")) | set(noisy.rows("test")))

    clean_model, noisy_model, again = ShapeProbe(), ShapeProbe(), ShapeProbe()
    fit_and_test(clean_model, plain, tmp_path)
    fit_and_test(noisy_model, noisy, tmp_path)
    rerun = stereo_module(supplemental_root, tmp_path, year=2025, supplemental={"noise_snr_db": [6, 6]})
    fit_and_test(again, rerun, tmp_path)
    clean, mixed = clean_model.waves[0], noisy_model.waves[0]
    added = mixed - clean  # the same crops (same seed) plus noise at exactly 6 dB below each crop
    ratio = added.pow(2).mean(dim=1).sqrt() / clean.pow(2).mean(dim=1).sqrt()
    assert torch.allclose(ratio, torch.full_like(ratio, 10 ** (-6 / 20)), rtol=1e-3)
    assert torch.equal(mixed, again.waves[0])  # drawn from (seed, epoch, batch): reproducible
    never = ShapeProbe()
    fit_and_test(never, stereo_module(supplemental_root, tmp_path, year=2025,
                                      supplemental={"noise_snr_db": [6, 6], "noise_prob": 0.0}), tmp_path)
    assert torch.equal(never.waves[0], clean)
    # validation and test clips stay clean
    scored = [o for o in noisy_model.test_out]
    assert sum(len(o["clip_id"]) for o in scored) == (plain.clips["split"] == "test").sum()

    machine = stereo_module(supplemental_root, tmp_path, year=2025, supplemental={"machine_clips": True},
                            labels="attribute")
    machine.setup()
    extra = machine.clips[machine.clips["kind"] == "machine"]
    assert len(extra) == 2 and set(extra["subset"]) == {"train"} and set(extra["domain"]) == {"source"}
    assert ("fan", 0, "") in machine.label_classes  # their own class under attribute labels
    with pytest.raises(ValueError, match="no noise-only clips"):
        stereo_module(supplemental_root, tmp_path, year=2024, supplemental={"noise_snr_db": [0, 5]}).setup()
    with pytest.raises(ValueError, match="data.supplemental takes machine_clips, noise_prob, noise_snr_db"):
        stereo_module(supplemental_root, tmp_path, year=2025, supplemental={"snr": [0, 5]})


# ---------------------------------------------------------------- end to end
@pytest.mark.parametrize("year, extra", [
    (2024, []),
    (2025, ["data.supplemental={noise_snr_db:[0,10],machine_clips:true}"]),
    (2026, ["data.channels=both"]),
])
def test_each_year_trains_and_prints_the_official_table(year: int, extra: list[str], tmp_path: Path, capsys) -> None:
    root = write_synthetic_dataset(tmp_path / "d", tiny(year, machine_types=SynthConfig(year=year).machine_types[:2],
                                                        eval_sections=(1,), clip_seconds=0.5))
    cfg = compose_train(["experiment=ae_baseline", f"data.root={root}", f"data.year={year}",
                         f"data.machine_types=[{','.join(SynthConfig(year=year).machine_types[:2])}]",
                         f"data.ground_truth={root / 'ground_truth'}", f"data.cache_dir={tmp_path / 'cache'}",
                         "data.num_workers=0", "data.progress=false", "logger=csv", "trainer.accelerator=cpu",
                         "trainer.max_epochs=1", "data.features.n_mels=32", "data.batch_size=4", *extra],
                        tmp_path / "run")
    metrics = train(cfg)
    out = capsys.readouterr().out
    assert f"DCASE {year} Task 2 scores" in out and "official score" in out
    assert 0.0 < metrics["test/official_score"] <= 1.0
    scores = pd.read_csv(tmp_path / "run" / "submission" / "scores.csv")
    # the anonymised evaluation section is scored with the labels of eval_data_list_<year>.csv
    assert set(scores.loc[scores["level"] == "section", "section"]) == {0, 1}
    clips = pd.read_csv(tmp_path / "run" / "submission" / "clip_scores.csv")
    assert "supplemental" not in set(clips["split"]) and set(clips["label"]) == {"normal", "anomaly"}


def test_near_far_consistency_by_hand() -> None:
    near = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    far = torch.tensor([[4.0, 3.0], [0.0, 2.0]], requires_grad=True)
    # unit vectors: (.6, .8) vs (.8, .6): squared distance .08; (1, 0) vs (0, 1): 2
    loss = near_far_consistency(near, far)
    assert loss.item() == pytest.approx((0.08 + 2.0) / 2)
    loss.backward()
    assert near.grad is None or not near.grad.any()  # the near view is the target only
    assert far.grad.abs().sum() > 0


def test_near_far_recipe_trains_on_both_microphones(stereo_root: Path, tmp_path: Path, capsys) -> None:
    cfg = compose_train(["experiment=near_far_consistency", f"data.root={stereo_root}", "data.machine_types=[fan]",
                         "data.labels=attribute", f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0",
                         "data.progress=false", "logger=csv", "trainer.accelerator=cpu", "trainer.max_epochs=1",
                         "data.batch_size=4", "data.features.n_mels=32", "data.train_crop.frames=16",
                         "data.test_segments.frames=16", "model.width_mult=0.25"], tmp_path / "run")
    assert cfg.data.channels == "both" and cfg.data.year == 2026
    metrics = train(cfg)
    assert "train/consistency" in metrics and float(metrics["train/consistency"]) > 0
    assert "DCASE 2026 Task 2 scores" in capsys.readouterr().out
