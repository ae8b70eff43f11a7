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
