"""CTL's diversity loss (eq. 8): zero for orthonormal parts, positive otherwise, by hand."""

import math

import pytest
import torch

from stgraph.losses import ReIDLoss, diversity_loss


def test_zero_for_orthonormal_parts_of_any_norm():
    q, _ = torch.linalg.qr(torch.randn(16, 5, dtype=torch.float64))
    parts = q.t().unsqueeze(0) * torch.tensor([1.0, 2.0, 0.5, 3.0, 7.0]).view(1, 5, 1).double()
    assert diversity_loss(parts).item() == pytest.approx(0.0, abs=1e-12)  # rows normalised


def test_value_by_hand_for_two_parts_at_sixty_degrees():
    parts = torch.tensor([[[1.0, 0.0], [math.cos(math.pi / 3), math.sin(math.pi / 3)]]])
    # off-diagonal cosines 0.5 twice: 2 * 0.25
    assert diversity_loss(parts).item() == pytest.approx(0.5, abs=1e-6)
    assert diversity_loss(torch.ones(1, 3, 4)).item() == pytest.approx(6.0)  # 6 off-diagonals


def test_time_average_comes_first_and_batch_is_averaged():
    # frame 1 and frame 2 are different, their mean is orthonormal
    frames = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])  # (T, N, C)
    assert diversity_loss(frames.unsqueeze(0)).item() == pytest.approx(0.0)
    batch = torch.stack([torch.eye(2), torch.ones(2, 2)])  # losses 0 and 2
    assert diversity_loss(batch).item() == pytest.approx(1.0)


def test_gradient_pushes_parts_apart():
    parts = torch.tensor([[[1.0, 0.1], [1.0, -0.1]]], requires_grad=True)
    diversity_loss(parts).backward()
    # the two parts' second coordinates move away from each other
    assert parts.grad[0, 0, 1] < 0 < parts.grad[0, 1, 1]


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\(B, N, C\) or \(B, T, N, C\)"):
        diversity_loss(torch.zeros(3, 4))


def test_reid_loss_adds_it_with_its_weight():
    torch.manual_seed(0)
    pids = torch.tensor([0, 0, 1, 1])
    out = {"logits": (torch.randn(4, 3),), "features": (torch.randn(4, 8),)}
    base, parts = ReIDLoss(3)(out, pids)
    assert "div" not in parts
    out["part_features"] = torch.ones(4, 2, 8)  # two identical parts: loss 2
    total, parts = ReIDLoss(3, diversity_weight=0.5)(out, pids)
    assert parts["div"] == pytest.approx(2.0)
    assert total.item() == pytest.approx(base.item() + 1.0, abs=1e-5)
