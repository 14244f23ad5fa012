"""The margin losses checked by hand on tiny tensors: AdaCos's adaptive scale, sub-cluster
AdaCos (AdaCos with one sub-cluster) and AdaProj."""

from __future__ import annotations

import math

import pytest
import torch

from asd_lightning.models.components.adaproj import AdaProj
from asd_lightning.models.components.adaptive_scale import adaptive_scale, initial_scale
from asd_lightning.models.components.sub_cluster_adacos import SubClusterAdaCos


def unit(*angles: float) -> torch.Tensor:
    """Unit vectors in the plane at the given angles (radians), one per row."""
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles])


def test_adaptive_scale_by_hand() -> None:
    """AdaCos's rule, with the reference implementations' 1 per sample in B_avg."""
    cosines = torch.tensor([[0.9, 0.1, -0.2], [0.2, 0.7, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = 2.0
    b_avg = (1 + math.exp(2 * 0.1) + math.exp(2 * -0.2) + 1 + math.exp(2 * 0.2) + math.exp(0.0)) / 2
    theta_med = (math.acos(0.9) + math.acos(0.7)) / 2  # median of two angles: their mean, below π/4
    got = adaptive_scale(cosines, y == 0, torch.acos(torch.tensor([0.9, 0.7])), s)
    assert got == pytest.approx(math.log(b_avg) / math.cos(theta_med), rel=1e-6)
    # wide angles are capped at π/4; a batch without a non-target centre keeps the scale
    wide = adaptive_scale(cosines, y == 0, torch.tensor([1.2, 1.4]), s)
    assert wide == pytest.approx(math.log(b_avg) / math.cos(math.pi / 4), rel=1e-6)
    assert adaptive_scale(cosines, torch.zeros_like(y, dtype=torch.bool), torch.tensor([0.1, 0.2]), s) == s
    assert initial_scale(5) == pytest.approx(math.sqrt(2) * math.log(4))
    with pytest.raises(ValueError, match="at least 3 class centres"):
        initial_scale(2)


def test_adacos_is_cross_entropy_of_scaled_cosines() -> None:
    loss = SubClusterAdaCos(embedding_dim=2, num_classes=3, n_subclusters=1).eval()
    loss.centres.copy_(unit(0.0, 2.0, 4.0))
    x = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])  # lengths do not matter: cosines only
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = float(loss.scale)
    assert s == pytest.approx(math.sqrt(2) * math.log(2))
    by_hand = 0.0
    for xi, label in zip(x, (0, 1)):
        cos = [float(torch.dot(xi / xi.norm(), c)) for c in loss.centres]
        by_hand += -(s * cos[label] - math.log(sum(math.exp(s * c) for c in cos))) / 2
    assert loss(x, y).item() == pytest.approx(by_hand, rel=1e-5)
    assert float(loss.scale) == s  # evaluation never moves the scale
    assert list(loss.parameters()) == []  # fixed centres: nothing to collapse


def test_sub_cluster_adacos_by_hand_with_mixup_labels_and_the_scale_update() -> None:
    loss = SubClusterAdaCos(embedding_dim=2, num_classes=2, n_subclusters=2)
    loss.centres.copy_(unit(0.0, 0.5, 2.0, 2.6))  # class 0: 0 and 0.5 rad; class 1: 2.0 and 2.6 rad
    x = unit(0.2, 2.1, 1.0)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])  # the third sample is a mixup
    s0 = float(loss.scale)
    assert s0 == pytest.approx(math.sqrt(2) * math.log(3))
    # the scale, by hand: non-target centres are those of label-0 classes (none for the mix)
    angle = {(0.2, 0): 0.2, (2.1, 1): 0.1, (1.0, 0): 0.5, (1.0, 1): 1.0}  # to each class's nearest centre
    own = [angle[(0.2, 0)], angle[(2.1, 1)], 0.25 * angle[(1.0, 0)] + 0.75 * angle[(1.0, 1)]]
    b_avg = (1 + math.exp(s0 * math.cos(1.8)) + math.exp(s0 * math.cos(2.4))  # sample 1 vs class 1
             + 1 + math.exp(s0 * math.cos(2.1)) + math.exp(s0 * math.cos(1.6))  # sample 2 vs class 0
             + 1) / 3  # the mix: no non-target centre, the 1 only
    s = math.log(b_avg) / math.cos(min(math.pi / 4, sorted(own)[1]))
    # the loss with the new scale: P(j) sums the softmax over the class's sub-clusters
    centres = (0.0, 0.5, 2.0, 2.6)
    by_hand = 0.0
    for a, yi in zip((0.2, 2.1, 1.0), y.tolist()):
        e = [math.exp(s * math.cos(a - c)) for c in centres]
        p = [(e[0] + e[1]) / sum(e), (e[2] + e[3]) / sum(e)]
        by_hand += -(yi[0] * math.log(p[0]) + yi[1] * math.log(p[1])) / 3
    got = loss(x, y)
    assert float(loss.scale) == pytest.approx(s, rel=1e-5)
    assert got.item() == pytest.approx(by_hand, rel=1e-5)
    x = x.clone().requires_grad_(True)
    loss(x, y).backward()
    assert x.grad.abs().sum() > 0  # the gradient reaches the embeddings


def test_adaproj_cosine_to_the_projection_by_hand() -> None:
    loss = AdaProj(embedding_dim=3, num_classes=2, subspace_dim=2).eval()
    e1, e2, e3 = torch.eye(3)
    loss.bases.copy_(torch.stack([torch.stack([e1, e2]), torch.stack([e2, e3])]))  # span{e1,e2}, span{e2,e3}
    assert float(loss.scale) == pytest.approx(math.sqrt(2) * math.log(2 * 2 - 1))  # s₀ from the C·m basis vectors
    x = torch.tensor([[3.0, 0.0, 4.0], [1.0, 2.0, 2.0]])
    cos = loss.cosines(x)[..., 0]
    # x̂ = (0.6, 0, 0.8): its projection on span{e1,e2} is (0.6, 0, 0), cos = 0.6; on span{e2,e3} 0.8
    assert cos[0].tolist() == pytest.approx([0.6, 0.8], abs=1e-6)
    x_hat = x[1] / x[1].norm()
    for j, basis in enumerate(loss.bases):
        projection = basis.T @ (basis @ x_hat)
        assert cos[1, j].item() == pytest.approx((x_hat @ projection / projection.norm()).item(), abs=1e-6)
    s = float(loss.scale)
    y = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    by_hand = 0.0
    for c, yi in zip(cos.tolist(), y.tolist()):
        log_z = math.log(sum(math.exp(s * v) for v in c))
        by_hand += -sum(w * (s * v - log_z) for w, v in zip(yi, c)) / 2
    assert loss(x, y).item() == pytest.approx(by_hand, rel=1e-5)


def test_adaproj_scale_update_and_orthonormal_random_bases() -> None:
    torch.manual_seed(0)
    loss = AdaProj(embedding_dim=16, num_classes=3, subspace_dim=4)
    bases = loss.bases
    assert bases.shape == (3, 4, 16)
    assert torch.allclose(bases @ bases.transpose(1, 2), torch.eye(4).expand(3, 4, 4), atol=1e-5)
    x, y = torch.randn(5, 16), torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float()
    cos = loss.cosines(x)[..., 0]
    expected = adaptive_scale(cos, y == 0, torch.acos(cos[y.bool()]), float(loss.scale))
    loss(x, y)
    assert float(loss.scale) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="subspace_dim"):
        AdaProj(embedding_dim=4, num_classes=3, subspace_dim=4)
