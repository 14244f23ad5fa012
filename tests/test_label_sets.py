"""Label sets: classifiers train on sections, or on attribute combinations within a section."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from asd_lightning.data import DCASE2022DataModule, build_clip_index
from asd_lightning.data.clip_index import label_keys
from asd_lightning.data.samplers import ClassBalancedBatchSampler, ShuffledBatchSampler
from asd_lightning.models.components.dg_mix_encoder import DGMixEncoder
from asd_lightning.models.dg_mix import SectionIDFinetune
from asd_lightning.models.section_id_baseline import SectionIDBaseline, section_anomaly_scores
from asd_lightning.models.two_bce import TwoBCEOutlierExposure
from conftest import make_2022, make_2023


def datamodule(root: Path, tmp_path: Path, **kwargs) -> DCASE2022DataModule:
    settings = dict(root=root, year=2023, machine_types=["fan"], cache_dir=tmp_path / "cache", batch_size=8,
                    eval_batch_size=4, progress=False, val_fraction=0.0, train_crop={"seconds": 0.5}, num_workers=0)
    settings.update(kwargs)
    dm = DCASE2022DataModule(**settings)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_label_keys_of_each_label_set(tmp_path: Path) -> None:
    index = build_clip_index(make_2023(tmp_path / "d", eval_clips=2), 2023)
    train = index[index["split"] == "train"]
    assert sorted(set(label_keys(train, "section"))) == [("fan", 0)]
    assert sorted(set(label_keys(train, "attribute"))) == [("fan", 0, "m-n_X"), ("fan", 0, "m-n_Y")]
    assert sorted(set(label_keys(train, "attribute_domain"))) == [
        ("fan", 0, "m-n_X", "source"), ("fan", 0, "m-n_Y", "source"), ("fan", 0, "m-n_Y", "target")]
    anonymised = index[index["file"] == "section_00_0000.wav"]
    assert label_keys(anonymised, "attribute") == [("fan", 0, "")]  # no attributes: no training class
    with pytest.raises(ValueError, match="data.labels must be one of section, attribute, attribute_domain"):
        label_keys(train, "machine")


def test_datamodule_label_table_and_batches(tmp_path: Path) -> None:
    root = make_2023(tmp_path / "d", eval_clips=2)
    dm = datamodule(root, tmp_path, labels="attribute")
    assert dm.section_classes == [("fan", 0)]
    assert dm.label_classes == [("fan", 0, "m-n_X"), ("fan", 0, "m-n_Y")] and dm.class_sections == [0, 0]
    clips = dm.clips.set_index("clip_id")
    classes = dm.table.meta["class"].numpy()
    assert all(classes[i] == (0 if clips.at[i, "attribute_string"] == "m-n_X" else 1)
               for i in clips.index if clips.at[i, "attribute_string"])
    # anonymised evaluation clips carry no attributes, so they are of no class (never trained on)
    assert (classes[clips.index[clips["file"].str.fullmatch(r"section_00_\d{4}\.wav")]] == -1).all()
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert set(batch["class"].tolist()) <= {0, 1} and (batch["section"] == 0).all()
    with pytest.raises(ValueError, match="data.labels must be one of"):
        DCASE2022DataModule(root=root, labels="attributes")
    # the default stays one class per section; 2022 sections with their attributes give more classes
    assert datamodule(root, tmp_path).label_classes == [("fan", 0)]
    dm = datamodule(make_2022(tmp_path / "d22", machines=("fan",), sections=(0, 1)), tmp_path, year=2022,
                    labels="attribute_domain")
    assert dm.label_classes == [("fan", 0, "a_0_b_0", "source"), ("fan", 0, "a_0_b_0", "target"),
                                ("fan", 1, "a_0_b_1", "source"), ("fan", 1, "a_0_b_1", "target")]
    assert dm.class_sections == [0, 0, 1, 1]


def test_attribute_classes_size_the_classifiers_through_a_trainer(tmp_path: Path) -> None:
    """A tiny 2023-layout set (one section, attribute values X and Y): with data.labels=attribute
    the MobileNetV2 baseline, SectionIDFinetune and the two-BCE product head get the two values
    as their classes from the datamodule, for training and in their checkpoints."""
    root = make_2023(tmp_path / "d", n_train=3, seconds=1.0)
    dm = datamodule(root, tmp_path, labels="attribute", batch_size=4,
                    features={"n_fft": 512, "hop_length": 256, "n_mels": 32}, train_crop={"frames": 32})
    encoder = DGMixEncoder(n_mels=32, frames=32)
    for model, head in ((SectionIDBaseline(optimizer=torch.optim.Adam, width_mult=0.25), "net.classifier.1"),
                        (SectionIDFinetune(encoder=encoder, optimizer=torch.optim.Adam), "classifier.2"),
                        (TwoBCEOutlierExposure(encoder=encoder, optimizer=torch.optim.Adam), "g_product")):
        trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path / "run")
        trainer.fit(model, datamodule=dm)
        assert model.hparams.num_classes == 2 and model.get_submodule(head).out_features == 2
        assert model.class_sections.tolist() == [0, 0]
        reloaded = type(model).load_from_checkpoint(trainer.checkpoint_callback.best_model_path, encoder=encoder)
        assert reloaded.hparams.num_classes == 2 and reloaded.class_sections.tolist() == [0, 0]


def test_classifier_scores_a_clip_by_its_sections_most_probable_class() -> None:
    """With attribute classes the test clip's own attributes are never used: p is the largest
    softmax probability among the classes of its section."""
    logits = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]])  # softmax: 1/8, 2/8, 5/8
    own = torch.tensor([[True, True, False]])  # classes 0 and 1 lie in the clip's section
    assert section_anomaly_scores(logits, own).item() == pytest.approx(math.log(3.0), abs=1e-6)  # p = 1/4
    model = SectionIDBaseline(num_classes=3).eval()
    model.class_sections = torch.tensor([0, 0, 1])  # two attribute classes in section 0, one in section 1
    assert model.classes_of_sections(torch.tensor([1, 0])).tolist() == [[False, False, True], [True, True, False]]
    with pytest.raises(ValueError, match="not trained on"):
        model.classes_of_sections(torch.tensor([-1]))


def test_real_sample_attribute_classes(shared_sample: Path) -> None:
    """The DCASE 2023 sample: one section per machine type, so one section class each; its
    attribute combinations are the classes a classifier can learn."""
    index = build_clip_index(shared_sample, 2023)
    train = index[index["split"] == "train"]
    sections = set(label_keys(train, "section"))
    attributes = set(label_keys(train, "attribute"))
    assert len(sections) == 7
    per_machine = {m: sorted(k[2] for k in attributes if k[0] == m) for m in sorted(train["machine"].unique())}
    assert per_machine["ToyCar"] == ["car_C2_spd_31V_mic_1", "car_D2_spd_34V_mic_1"]
    assert per_machine["fan"] == ["m-n_X"]  # both training clips share their attributes
    assert len(attributes) == sum(len(v) for v in per_machine.values()) > len(sections)


def test_balanced_classes_sampler_oversamples_rare_classes(tmp_path: Path) -> None:
    classes = np.array([0] * 12 + [1] * 3 + [2] * 1)  # e.g. two source attributes' clips and few target ones
    sampler = ClassBalancedBatchSampler(classes, batch_size=4, seed=3)
    assert len(sampler) == len(ShuffledBatchSampler(16, 4)) == 4
    drawn = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn += [i for batch in sampler for i in batch]
    shares = np.bincount(classes[drawn], minlength=3) / len(drawn)
    assert shares == pytest.approx([1 / 3] * 3, abs=0.03)  # each class a third, not 12:3:1
    sampler.set_epoch(5)
    assert list(sampler) == list(sampler)  # a function of (seed, epoch)
    # through the datamodule: data.sampler=balanced_classes on the classes of data.labels
    dm = datamodule(make_2023(tmp_path / "d", n_train=6), tmp_path, labels="attribute", sampler="balanced_classes",
                    batch_size=4)
    assert isinstance(dm.train_dataloader().batch_sampler, ClassBalancedBatchSampler)
