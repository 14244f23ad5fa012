"""The AE baseline's anomaly score by hand: reconstruction error per frame vector, then the mean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asd_lightning.models.ae_baseline import AEBaseline


def known_net() -> nn.Linear:
    """A 'reconstruction' that halves the first entry of each 4-value vector, drops the second
    and the last and keeps the third: the residual is (-v0 / 2, -v1, 0, -v3)."""
    net = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.diag(torch.tensor([0.5, 0.0, 1.0, 0.0])))
    return net


# 2 mels x 3 frames; context 2 gives vectors (frame t, frame t + 1), frame by frame:
# t = 0: (2, 1, 0, 2) → error (1 + 1 + 4) / 4 = 1.5;  t = 1: (0, 2, 4, 6) → error (4 + 36) / 4 = 10
# (stacked mel by mel, t = 0 would be (2, 0, 1, 2) → 1.25)
CLIP = torch.tensor([[2.0, 0.0, 4.0], [1.0, 2.0, 6.0]])


def test_clip_score_is_the_mean_over_vectors_of_each_vectors_mean_squared_error() -> None:
    """Catches a per-vector sum instead of the mean (scores 4 times larger), a clip score other
    than the mean over the vectors (max: 10), frames stacked mel by mel instead of frame by frame,
    and segmented clips averaged otherwise than over all their vectors."""
    model = AEBaseline(known_net(), context=2).eval()
    whole = torch.stack([CLIP, torch.zeros(2, 3)])[:, None]  # [2 clips, 1, 2 mels, 3 frames]
    assert model.reconstruction_errors(whole).flatten().tolist() == pytest.approx([1.5, 10.0, 0.0, 0.0])
    with torch.no_grad():
        assert model.clip_scores({"features": whole}).tolist() == pytest.approx([5.75, 0.0])
        out = model.test_step({"features": whole, "clip_id": torch.tensor([7, 8])}, 0)  # what the scores CSV gets
    assert out["clip_id"].tolist() == [7, 8] and out["score"].tolist() == pytest.approx([5.75, 0.0])
    # segmented clips [B, S, 1, mels, frames]: the mean over every vector of every segment
    doubled = torch.stack([CLIP, 2 * CLIP])  # errors scale by 4: 6, 40
    segmented = torch.stack([doubled, torch.stack([CLIP, torch.zeros(2, 3)])])[:, :, None]
    with torch.no_grad():
        assert model.clip_scores({"features": segmented}).tolist() == pytest.approx(
            [(1.5 + 10 + 6 + 40) / 4, (1.5 + 10) / 4])
