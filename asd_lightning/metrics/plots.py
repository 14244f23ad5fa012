"""Diagnostic figures of a scored test set: ROC curves, score histograms, embedding maps.

Every function returns a matplotlib ``Figure`` (Agg backend, no display needed);
:func:`save_figure` writes it as PNG. Inputs are the scored clip table (``machine``,
``section``, ``domain``, ``label`` normal/anomaly, ``score``) and, for the projection, clip
embeddings.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from asd_lightning.metrics.official import domain_clips  # noqa: E402


def _grid(n: int, size: float = 3.2):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _anomalous(frame: pd.DataFrame) -> np.ndarray:
    return (frame["label"].astype(str) == "anomaly").to_numpy()


def roc_curves(scored: pd.DataFrame, year: int) -> plt.Figure:
    """ROC per machine/section, one curve per domain, as the year's AUC counts the clips
    (2022+: the domain's normals with all anomalies of the section; 2021: the domain's clips)."""
    groups = list(scored.groupby(["machine", "section"], sort=True))
    fig, axes = _grid(len(groups))
    for ax, ((machine, section), group) in zip(axes, groups):
        anomaly = _anomalous(group)
        for domain in ("source", "target"):
            keep = domain_clips(group["domain"].to_numpy(), anomaly, domain, year)
            if keep.sum() and 0 < anomaly[keep].sum() < keep.sum():
                fpr, tpr, _ = roc_curve(anomaly[keep], group["score"].to_numpy()[keep])
                ax.plot(fpr, tpr, label=domain)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.axvline(0.1, color="grey", lw=0.6, ls=":")  # pAUC range
        ax.set(title=f"{machine} section {int(section):02d}", xlabel="FPR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def score_histograms(scored: pd.DataFrame) -> plt.Figure:
    """Per machine and domain: histograms of normal vs anomalous clip scores."""
    groups = list(scored.groupby(["machine", "domain"], sort=True))
    fig, axes = _grid(len(groups))
    for ax, ((machine, domain), group) in zip(axes, groups):
        anomaly = _anomalous(group)
        bins = np.histogram_bin_edges(group["score"], bins=20)
        ax.hist(group["score"][~anomaly], bins=bins, alpha=0.6, label="normal")
        ax.hist(group["score"][anomaly], bins=bins, alpha=0.6, label="anomaly")
        ax.set(title=f"{machine} {domain}", xlabel="anomaly score", ylabel="clips")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def project(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``[N, D]`` → ``[N, 2]`` by PCA or t-SNE (perplexity capped for small N)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if len(embeddings) < 3:
        raise ValueError(f"a 2-D projection needs at least 3 embeddings, got {len(embeddings)}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(embeddings)
    if method == "tsne":
        perplexity = float(min(30, (len(embeddings) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)
    raise ValueError(f"projection must be pca or tsne, got {method!r}")


def embedding_map(points: np.ndarray, clips: pd.DataFrame, title: str = "") -> plt.Figure:
    """2-D points of clips coloured by section, by domain and by label (three panels)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    colour_by = {
        "section": clips["machine"].astype(str) + " " + clips["section"].map(lambda s: f"{int(s):02d}"),
        "domain": clips["domain"].astype(str),
        "label": clips["label"].astype(str),
    }
    for ax, (what, values) in zip(axes, colour_by.items()):
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            ax.scatter(points[mask, 0], points[mask, 1], s=10, alpha=0.7, label=value)
        ax.set(title=f"{title} by {what}".strip(), xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
