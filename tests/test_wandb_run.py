"""A real offline W&B run (``logger=wandb``, ``WANDB_MODE=offline``) of ``asd-train`` with the
inlier callback: what ``wandb sync`` would upload holds the official scores, the three figures
(the very PNGs the run writes) and the table of test-clip embeddings for W&B's projection panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asd_lightning.data.decode import decode
from asd_lightning.deploy import ModelBundle
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train

pytest.importorskip("wandb")
from wandb_records import offline_run  # noqa: E402

FIGURES = ("roc", "score_histograms", "embeddings_pca")


@pytest.mark.slow
def test_an_offline_wandb_run_receives_the_scores_the_figures_and_the_embedding_table(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """Breaks caught (each tried): the figures not sent to a ``WandbLogger``, the table not
    sent, a table whose embeddings are not its rows' clips' (rows out of order)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=4, n_test=2, seconds=1.0)
    run = tmp_path / "run"
    metrics = train(compose_train([
        "experiment=ae_baseline", f"data.root={root}", "data.machine_types=[fan]",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0", "data.progress=false", "logger=wandb", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        "data.batch_size=4", "callbacks=inlier",
        "+trainer.enable_progress_bar=false"], run))
    folder = next(run.glob("wandb/offline-run-*"))
    summary = offline_run(next(folder.glob("run-*.wandb")))["summary"]

    scores = {k: v for k, v in metrics.items()
              if (k.startswith("test/") and "/section_" in k) or k == "test/official_score"}
    assert len(scores) > 10 and all(summary[k] == pytest.approx(v) for k, v in scores.items())
    for name in FIGURES:
        assert summary[f"test/{name}/_type"] == "images/separated"
        [sent] = summary[f"test/{name}/filenames"]
        assert (folder / "files" / sent).read_bytes() == (run / "submission" / "plots" / f"{name}.png").read_bytes()

    assert summary["test/embeddings/_type"] == "table-file"
    table = json.loads((folder / "files" / summary["test/embeddings/path"]).read_text())
    clips = pd.read_csv(run / "submission" / "clip_scores.csv").query("split == 'test'")
    dims = len(table["columns"]) - 6
    assert table["columns"] == ["file", "machine", "section", "domain", "label", "score",
                                *[f"e{j}" for j in range(dims)]]
    rows = pd.DataFrame(table["data"], columns=table["columns"])
    assert dims > 1 and len(rows) == len(clips) == 2 * 2 * 2 * 2  # every labelled test clip, once
    merged = rows.merge(clips, on=["file", "machine", "section", "domain", "label"], suffixes=("", "_run"))
    assert len(merged) == len(rows) and np.allclose(merged["score"], merged["score_run"])
    embeddings = rows[[f"e{j}" for j in range(dims)]].to_numpy()
    assert len(np.unique(embeddings.round(6), axis=0)) == len(rows)
    bundle = ModelBundle.load(run / "bundle" / "fan")  # the trained encoder, as the test loop ran it
    for file, row in zip(rows["file"], embeddings):  # each row: its own clip's mean segment embedding
        clip = bundle.embed(decode(root / "dev_data" / "fan" / "test" / file, bundle.decode_options)).mean(axis=0)
        assert np.allclose(row, clip, rtol=1e-4, atol=1e-5), file
