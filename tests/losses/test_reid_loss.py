"""Tests of stgraph.losses.ReIDLoss: the model-supplied terms (part triplet, regularizers)."""

from __future__ import annotations

import pytest
import torch

from stgraph.losses import ReIDLoss, TripletLoss


def _outputs(feat: torch.Tensor, num_classes: int = 2) -> dict:
    logits = torch.zeros(feat.size(0), num_classes)
    return {"features": (feat,), "logits": (logits,)}


def test_part_triplet_is_the_mean_over_parts_of_the_batch_hard_triplet():
    torch.manual_seed(0)
    pids = torch.tensor([0, 0, 1, 1])
    feat = torch.randn(4, 3)
    parts = torch.randn(4, 2, 3, requires_grad=True)
    loss_fn = ReIDLoss(num_classes=2, margin=0.3, part_triplet_weight=0.5)
    base, _ = loss_fn(_outputs(feat), pids)
    total, logged = loss_fn({**_outputs(feat), "part_triplet_features": parts}, pids)
    tri = TripletLoss(margin=0.3)
    expected = (tri(parts[:, 0], pids) + tri(parts[:, 1], pids)) / 2
    assert logged["part_triplet"] == pytest.approx(expected.item(), abs=1e-6)
    torch.testing.assert_close(total, base + 0.5 * expected)
    total.backward()
    assert parts.grad is not None and parts.grad.abs().sum() > 0


def test_part_triplet_of_three_parts_on_a_larger_batch_equals_the_per_part_losses():
    # P = 3 parts, 8 identities x 4 clips (B = 32), and a singleton identity whose anchor is
    # invalid (no positive): the vectorised (P, B, B) mining equals TripletLoss part by part
    g = torch.Generator().manual_seed(1)
    pids = torch.cat((torch.arange(8).repeat_interleave(4), torch.tensor([8])))
    parts = torch.randn(33, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    feat = torch.randn(33, 5, generator=g, dtype=torch.float64)
    loss_fn = ReIDLoss(num_classes=9, margin=0.4)
    outputs = {"features": (feat,), "logits": (torch.zeros(33, 9, dtype=torch.float64),)}
    base, _ = loss_fn(outputs, pids)
    total, logged = loss_fn({**outputs, "part_triplet_features": parts}, pids)
    tri = TripletLoss(margin=0.4)
    per_part = torch.stack([tri(parts[:, p], pids) for p in range(3)])
    assert bool((per_part > 0).all()) and len(set(per_part.tolist())) == 3  # distinct parts
    torch.testing.assert_close(tri.per_part(parts, pids), per_part, rtol=1e-12, atol=1e-12)
    assert logged["part_triplet"] == pytest.approx(per_part.mean().item(), rel=1e-12)
    torch.testing.assert_close(total, base + per_part.mean(), rtol=1e-12, atol=1e-12)
    # and the same gradient as the per-part losses
    (grad,) = torch.autograd.grad(total - base, parts)
    (expected,) = torch.autograd.grad(per_part.mean(), parts)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    # float32 features: equal up to rounding
    parts32 = parts.detach().float()
    torch.testing.assert_close(tri.per_part(parts32, pids),
                               torch.stack([tri(parts32[:, p], pids) for p in range(3)]))


def test_regularizers_are_added_and_logged_by_name():
    pids = torch.tensor([0, 0, 1, 1])
    feat = torch.randn(4, 3)
    reg = torch.tensor(0.7, requires_grad=True)
    loss_fn = ReIDLoss(num_classes=2)
    base, _ = loss_fn(_outputs(feat), pids)
    total, logged = loss_fn({**_outputs(feat), "regularizers": {"sta_reg": reg}}, pids)
    assert logged["sta_reg"] == pytest.approx(0.7)
    torch.testing.assert_close(total, base + 0.7)
    total.backward()
    assert reg.grad == pytest.approx(1.0)


def test_bad_entries_are_refused():
    pids = torch.tensor([0, 0, 1, 1])
    feat = torch.randn(4, 3)
    loss_fn = ReIDLoss(num_classes=2)
    with pytest.raises(ValueError, match="part_triplet_features"):
        loss_fn({**_outputs(feat), "part_triplet_features": torch.randn(4, 3)}, pids)
    with pytest.raises(ValueError, match="clashes"):
        loss_fn({**_outputs(feat), "regularizers": {"ce": torch.tensor(1.0)}}, pids)
