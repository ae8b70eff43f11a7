"""Tests of stgraph.losses.TripletLoss (batch-hard)."""

from __future__ import annotations

import pytest
import torch

from stgraph.losses import TripletLoss


def test_four_points_on_a_line_value_and_gradient():
    # x = 0, 1 (id 0) and 3, 6 (id 1), margin 0.5:
    # anchor 0: d_ap 1, d_an 3 -> 0;  anchor 1: d_ap 1, d_an 2 -> 0
    # anchor 3: d_ap 3, d_an 2 -> 1.5; anchor 6: d_ap 3, d_an 5 -> 0;  mean 1.5 / 4
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]], requires_grad=True)
    loss = TripletLoss(margin=0.5)(x, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(0.375, abs=1e-6)
    loss.backward()
    # only anchor x=3 is active: (|3 - 6| - |3 - 1| + 0.5) / 4
    torch.testing.assert_close(x.grad, torch.tensor([[0.0], [0.25], [-0.5], [0.25]]))


def test_two_dimensional_value():
    # square of side 1 plus a far point; ids: (0,0) & (1,1) are id 0, (1,0) & (0,1) id 1.
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # every anchor: hardest positive at sqrt(2), hardest negative at 1
    expected = 2**0.5 - 1 + 0.3
    assert TripletLoss()(x, pids).item() == pytest.approx(expected, rel=1e-6)


def test_anchors_without_positive_or_negative_are_excluded():
    # 0, 1 are id 0; 3, 10 id 2; the singleton 2.5 (id 5) has no positive: it is only
    # a negative for the others and is left out of the mean (4 valid anchors, not 5).
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [2.5]])
    pids = torch.tensor([0, 0, 2, 2, 5])
    # anchor 0: 1 - 2.5 + 1 -> 0;  anchor 1: 1 - 1.5 + 1 = 0.5
    # anchor 3: 7 - 0.5 + 1 = 7.5; anchor 10: 7 - 7.5 + 1 = 0.5
    assert TripletLoss(1.0)(x, pids).item() == pytest.approx((0.5 + 7.5 + 0.5) / 4)
    # without the singleton: anchor 1: 1 - 2 + 1 -> 0; anchor 3: 7 - 2 + 1 = 6;
    # anchor 10: 7 - 9 + 1 -> 0
    assert TripletLoss(1.0)(x[:4], pids[:4]).item() == pytest.approx(6 / 4)


def test_no_valid_anchor_returns_zero_with_graph():
    x = torch.randn(3, 4, requires_grad=True)
    for pids in (torch.tensor([1, 1, 1]), torch.tensor([0, 1, 2])):
        loss = TripletLoss()(x, pids)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None


def test_gradients_finite_for_identical_features():
    x = torch.ones(6, 8, requires_grad=True)
    loss = TripletLoss(0.3)(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert loss.item() == pytest.approx(0.3, abs=1e-4)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # half identical, half distinct
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.ones(3, 8), torch.randn(3, 8, generator=g)]).requires_grad_()
    TripletLoss()(y, torch.tensor([0, 0, 1, 1, 2, 2])).backward()
    assert torch.isfinite(y.grad).all()


def test_matches_loop_reference_and_permutation_invariance():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    pids = torch.arange(4).repeat_interleave(4)
    crit = TripletLoss(0.3)
    loss = crit(x, pids)
    ref = []
    for a in range(16):
        d = (x - x[a]).norm(dim=1)
        pos = (pids == pids[a]) & (torch.arange(16) != a)
        ref.append((d[pos].max() - d[pids != pids[a]].min() + 0.3).clamp_min(0))
    torch.testing.assert_close(loss, torch.stack(ref).mean())
    assert loss.item() > 0
    perm = torch.randperm(16, generator=g)
    torch.testing.assert_close(crit(x[perm], pids[perm]), loss)


def test_half_precision_input_is_promoted():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]], dtype=torch.bfloat16)
    loss = TripletLoss(0.5)(x, torch.tensor([0, 0, 1, 1]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.375, abs=1e-3)


def test_errors_and_repr():
    with pytest.raises(ValueError, match=r"features of shape \(B, D\), got \(4,\)"):
        TripletLoss()(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"pids of shape \(4,\), got \(3,\)"):
        TripletLoss()(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="margin must be > 0"):
        TripletLoss(0.0)
    assert repr(TripletLoss()) == "TripletLoss(margin=0.3)"


def test_per_part_equals_the_loss_of_each_part():
    # P = 4 parts of B = 12 features, one singleton identity (an invalid anchor)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 7])
    crit = TripletLoss(0.3)
    got = crit.per_part(x, pids)
    assert got.shape == (4,)
    expected = torch.stack([crit(x[:, p], pids) for p in range(4)])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    (g_exp,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g_got, g_exp, rtol=1e-10, atol=1e-12)
    # no valid anchor: zeros that keep the graph; bfloat16 is promoted like forward
    zero = crit.per_part(x, torch.arange(12))
    assert torch.equal(zero, torch.zeros(4, dtype=torch.float64)) and zero.grad_fn is not None
    assert crit.per_part(x.detach().bfloat16(), pids).dtype == torch.float32
    with pytest.raises(ValueError, match=r"part features of shape \(B, P, D\), got \(12, 6\)"):
        crit.per_part(x[:, 0], pids)
    with pytest.raises(ValueError, match=r"pids of shape \(12,\), got \(11,\)"):
        crit.per_part(x, pids[:11])
