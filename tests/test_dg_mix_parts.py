"""DG-Mix building blocks: the Table 1 encoder, the VICReg / DG-Mix loss terms, LARS and the
warm-up + cosine schedule, each against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asd_lightning.models.components.dg_mix_encoder import DGMixEncoder
from asd_lightning.models.components.vicreg_terms import consistency, covariance, invariance, variance
from asd_lightning.optim import LARS, WarmupCosine, exclude_bias_and_norm


def test_encoder_follows_table_1() -> None:
    encoder = DGMixEncoder()
    assert sum(p.numel() for p in encoder.parameters()) == pytest.approx(1.45e6, rel=0.005)
    out = encoder(torch.randn(2, 1, 128, 64))  # one mel channel, repeated to three
    assert out.shape == (2, 320)
    full_size = [m for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (4, 2)]
    assert len(full_size) == 1 and full_size[0].in_channels == 320


def test_variance_hinge_on_the_standard_deviation() -> None:
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # unbiased variances 2 and 0
    expected = (max(0.0, 1 - math.sqrt(2 + 1e-4)) + (1 - math.sqrt(1e-4))) / 2
    assert variance(z).item() == pytest.approx(expected, rel=1e-6)


def test_covariance_off_diagonal_squares_over_dimension() -> None:
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    # means 3 and 5; C01 = ((-2)(-3) + 0 (-1) + 2 · 4) / (3 - 1) = 7; two off-diagonal entries over D = 2
    assert covariance(z).item() == pytest.approx(2 * 7.0 ** 2 / 2, rel=1e-6)
    assert covariance(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]])).item() == pytest.approx(0.0)


def test_consistency_with_known_lambda() -> None:
    z, z2 = torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    exact = torch.tensor([[0.5, 0.5], [1.5, 1.5]])
    assert consistency(exact, z, z2, torch.tensor([0.5, 0.75])).item() == pytest.approx(0.0, abs=1e-7)
    off = torch.tensor([[1.0, 1.0], [1.5, 1.5]])  # first row (0.5, 0.5) away: 0.5; second exact: 0
    assert consistency(off, z, z2, torch.tensor([0.5, 0.75])).item() == pytest.approx(0.25)
    assert consistency(exact[:1], z[:1], z2[:1], 0.5).item() == pytest.approx(0.0, abs=1e-7)
    assert invariance(z, z2).item() == pytest.approx((1 + 1 + 4 + 4) / 4)


def test_lars_step_by_hand() -> None:
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.1, "lars_exclude": True}],
               lr=1.0, momentum=0.9, trust_coefficient=0.001)
    w.grad, b.grad = torch.tensor([1.0, 0.0]), torch.tensor([2.0])
    opt.step()
    update = torch.tensor([1.0 + 0.3, 0.0 + 0.4])  # g + wd · w
    trust = 0.001 * 5.0 / math.sqrt(1.3 ** 2 + 0.4 ** 2)
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - trust * update, atol=1e-7)
    assert b.item() == pytest.approx(1.0 - 2.0)  # plain SGD: no decay, no trust ratio
    w_before = w.detach().clone()
    w.grad, b.grad = torch.tensor([0.0, 0.0]), torch.tensor([0.0])
    opt.step()  # momentum carries 0.9 of the first update; the new one is the decay alone
    decay = 0.1 * w_before
    second = 0.001 * torch.linalg.vector_norm(w_before) / torch.linalg.vector_norm(decay) * decay
    assert torch.allclose(w.detach(), w_before - (0.9 * trust * update + second), atol=1e-7)
    assert b.item() == pytest.approx(-1.0 - 0.9 * 2.0)


def test_bias_and_norm_parameters_are_excluded() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Conv1d(4, 2, 1, bias=False))
    adapted, excluded = exclude_bias_and_norm(net, weight_decay=1e-4)
    assert {id(p) for p in adapted["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in excluded["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}
    assert (adapted["weight_decay"], excluded["weight_decay"], excluded["lars_exclude"]) == (1e-4, 0.0, True)


def test_warmup_then_cosine_to_the_final_rate() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.8)
    schedule = WarmupCosine(opt, total_steps=100, warmup_fraction=0.1, final_lr=0.002)
    rates = []
    for _ in range(101):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.4) and rates[10] == pytest.approx(0.8)
    midway = 0.002 + (0.8 - 0.002) * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert rates[55] == pytest.approx(midway)
    assert rates[100] == pytest.approx(0.002)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # decays monotonically after warm-up
