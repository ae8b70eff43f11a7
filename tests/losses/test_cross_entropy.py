"""Tests of stgraph.losses.CrossEntropyLabelSmooth."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stgraph.losses import CrossEntropyLabelSmooth


def test_value_by_hand():
    # logits (0, ln 2, ln 5): softmax = (1/8, 2/8, 5/8); target 2; K = 3, eps = 0.3.
    logits = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]])
    q = [0.1, 0.1, 0.8]  # (1 - 0.3) * onehot + 0.3 / 3
    expected = -sum(qi * math.log(pi) for qi, pi in zip(q, [1 / 8, 2 / 8, 5 / 8], strict=True))
    loss = CrossEntropyLabelSmooth(3, epsilon=0.3)(logits, torch.tensor([2]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_logits_give_log_k_for_any_epsilon():
    logits = torch.zeros(4, 7)
    for eps in (0.0, 0.1, 0.9):
        loss = CrossEntropyLabelSmooth(7, eps)(logits, torch.tensor([0, 3, 6, 2]))
        assert loss.item() == pytest.approx(math.log(7), rel=1e-6)


def test_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 11, generator=g) * 3
    targets = torch.randint(0, 11, (16,), generator=g)
    torch.testing.assert_close(CrossEntropyLabelSmooth(11, 0.0)(logits, targets),
                               F.cross_entropy(logits, targets))
    torch.testing.assert_close(CrossEntropyLabelSmooth(11, 0.1)(logits, targets),
                               F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_mean_over_batch_and_gradient():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    crit = CrossEntropyLabelSmooth(5, 0.2)
    per_row = torch.stack([crit(logits[i : i + 1], targets[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(crit(logits, targets), per_row.mean())
    crit(logits, targets).backward()
    # d/dz = (softmax(z) - q) / B
    q = torch.full((6, 5), 0.2 / 5)
    q[torch.arange(6), targets] += 0.8
    torch.testing.assert_close(logits.grad, (logits.detach().softmax(1) - q) / 6)


def test_errors():
    crit = CrossEntropyLabelSmooth(4)
    with pytest.raises(ValueError, match=r"target 4 out of range for num_classes=4"):
        crit(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"target -1 out of range for num_classes=4"):
        crit(torch.zeros(2, 4), torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match=r"logits of shape \(B, 4\), got \(2, 5\)"):
        crit(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"targets of shape \(2,\), got \(3,\)"):
        crit(torch.zeros(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        crit(torch.zeros(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLabelSmooth(4, epsilon=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        CrossEntropyLabelSmooth(0)


def test_repr():
    expected = "CrossEntropyLabelSmooth(num_classes=751, epsilon=0.1)"
    assert repr(CrossEntropyLabelSmooth(751)) == expected
