import doctest
import math

import pytest
import torch

import stgraph.nn.part_temporal_attention as module
from stgraph.nn import PartTemporalAttention


def test_values_by_hand():
    # B = 1, N = 2 frames, K = 2 parts, C = 2; part 0 reads channel 0, part 1 channel 1
    layer = PartTemporalAttention(2, num_parts=2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    ln2, ln3 = math.log(2.0), math.log(3.0)
    x = torch.tensor([[[[ln3, 5.0], [7.0, 0.0]],  # frame 0: part 0, part 1
                       [[0.0, 1.0], [1.0, ln2]]]])  # frame 1
    pooled, t = layer(x)
    # part 0: e = (ln 3, 0) -> t = (3/4, 1/4); part 1: e = (0, ln 2) -> t = (1/3, 2/3)
    torch.testing.assert_close(t, torch.tensor([[[0.75, 1 / 3], [0.25, 2 / 3]]]))
    expected = torch.tensor([[[0.75 * ln3, 0.75 * 5 + 0.25 * 1],
                              [7 / 3 + 2 / 3, 2 / 3 * ln2]]])
    torch.testing.assert_close(pooled, expected)


def test_vectorised_equals_per_part_loop():
    torch.manual_seed(0)
    layer = PartTemporalAttention(6, num_parts=3).double()
    x = torch.randn(4, 5, 3, 6, dtype=torch.float64)
    pooled, t = layer(x)
    for k in range(3):
        e = x[:, :, k] @ layer.weight[k]  # (B, N)
        tk = torch.softmax(e, dim=1)
        torch.testing.assert_close(t[:, :, k], tk)
        torch.testing.assert_close(pooled[:, k], (tk[..., None] * x[:, :, k]).sum(dim=1))


def test_weights_are_distributions_over_frames_and_order_does_not_matter():
    torch.manual_seed(1)
    layer = PartTemporalAttention(8, num_parts=2)
    x = torch.randn(3, 6, 2, 8)
    pooled, t = layer(x)
    assert bool((t >= 0).all())
    torch.testing.assert_close(t.sum(dim=1), torch.ones(3, 2))
    perm = torch.tensor([5, 2, 0, 1, 4, 3])
    pooled_p, t_p = layer(x[:, perm])
    torch.testing.assert_close(pooled_p, pooled)
    torch.testing.assert_close(t_p, t[:, perm])
    # frames that agree give that feature back, with uniform weights
    same = x[:, :1].expand(3, 6, 2, 8)
    pooled_s, t_s = layer(same)
    torch.testing.assert_close(pooled_s, x[:, 0])
    torch.testing.assert_close(t_s, torch.full((3, 6, 2), 1 / 6))


def test_gradient_reaches_the_weight():
    torch.manual_seed(2)
    layer = PartTemporalAttention(4, num_parts=3)
    pooled, _ = layer(torch.randn(2, 4, 3, 4))
    pooled.pow(2).sum().backward()
    assert bool(layer.weight.grad.abs().sum() > 0)


def test_errors_and_repr():
    layer = PartTemporalAttention(4, num_parts=2)
    assert repr(layer) == "PartTemporalAttention(4, num_parts=2)"
    with pytest.raises(ValueError, match=r"\(B, N, 2, 4\) = \(B, N, K, C\), got \(2, 3, 3, 4\)"):
        layer(torch.randn(2, 3, 3, 4))
    with pytest.raises(ValueError, match=r"got \(3, 2, 4\)"):
        layer(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="num_parts must be >= 1"):
        PartTemporalAttention(4, num_parts=0)


def test_docstring_examples_run():
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
