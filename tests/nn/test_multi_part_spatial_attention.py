import doctest
import math

import pytest
import torch

import stgraph.nn.multi_part_spatial_attention as module
from stgraph.nn import MultiPartSpatialAttention, hellinger_diversity


def _by_hand_layer():
    # C = 2, K = 2, d = 1: model 0 scores relu(x[0]) * ln 3, model 1 relu(x[1] - 1) * ln 3
    layer = MultiPartSpatialAttention(2, num_parts=2, hidden_channels=1)
    with torch.no_grad():
        layer.hidden.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
        layer.hidden.bias.copy_(torch.tensor([0.0, -1.0]))
        layer.score.weight.fill_(math.log(3.0))
    return layer


def test_part_features_by_hand():
    # one frame, a 1 x 2 map: cell 0 = (1, 0), cell 1 = (0, 2)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 2, 1, 2)
    parts, s = _by_hand_layer()(x)
    # model 0: e = (ln 3, 0) -> s = (3/4, 1/4); model 1: relu((0, 2) - 1) = (0, 1),
    # e = (0, ln 3) -> s = (1/4, 3/4) (the ReLU cuts -1 to 0)
    torch.testing.assert_close(s, torch.tensor([[[[0.75, 0.25]], [[0.25, 0.75]]]]))
    expected = torch.tensor([[[0.75, 0.5], [0.25, 1.5]]])  # s-weighted sums of the cells
    torch.testing.assert_close(parts, expected)
    torch.testing.assert_close(_by_hand_layer().scores(x).flatten(-2),
                               torch.tensor([[[math.log(3.0), 0.0], [0.0, math.log(3.0)]]]))


@pytest.mark.parametrize("shared", [False, True])
def test_maps_are_distributions_over_the_cells(shared):
    torch.manual_seed(0)
    layer = MultiPartSpatialAttention(8, num_parts=3, hidden_channels=4, shared=shared)
    x = torch.randn(2, 5, 8, 4, 3)
    parts, s = layer(x)
    assert parts.shape == (2, 5, 3, 8) and s.shape == (2, 5, 3, 4, 3)
    assert bool((s >= 0).all())
    torch.testing.assert_close(s.sum(dim=(-2, -1)), torch.ones(2, 5, 3))
    # each part feature is a convex combination of the cells: inside their per-channel range
    lo, hi = x.amin(dim=(-2, -1)), x.amax(dim=(-2, -1))  # (2, 5, 8)
    assert bool((parts >= lo[:, :, None] - 1e-6).all() and (parts <= hi[:, :, None] + 1e-6).all())


def _naive(layer, x):
    """Per-part loop over the K models with explicit matrices, x (N, C, h, w)."""
    K, d = layer.num_parts, layer.hidden_channels
    cells = x.flatten(2).transpose(1, 2)  # (N, L, C)
    parts, maps = [], []
    for k in range(K):
        if layer.shared:
            bn = layer.bn
            h = cells @ layer.hidden.weight[:, :, 0, 0].t()  # (N, L, d)
            h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            w2 = layer.score.weight[k, :, 0, 0]
            sb = layer.score_bn  # the authors' bn2 on the scores, model k's channel
            e = torch.relu(h) @ w2
            e = (e - sb.running_mean[k]) / torch.sqrt(sb.running_var[k] + sb.eps) * sb.weight[k]
            e = e + sb.bias[k]
        else:
            w = layer.hidden.weight[k * d:(k + 1) * d, :, 0, 0]  # W_k (d, C)
            b = layer.hidden.bias[k * d:(k + 1) * d]  # b_k
            h = cells @ w.t() + b
            w2 = layer.score.weight[k, :, 0, 0]  # w'_k (d,)
            e = torch.relu(h) @ w2  # (N, L)
        s = torch.softmax(e, dim=1)
        maps.append(s)
        parts.append((s[:, :, None] * cells).sum(dim=1))  # (N, C)
    return torch.stack(parts, dim=1), torch.stack(maps, dim=1).view(x.size(0), K, *x.shape[-2:])


@pytest.mark.parametrize("shared", [False, True])
def test_vectorised_equals_per_part_loop(shared):
    torch.manual_seed(1)
    layer = MultiPartSpatialAttention(6, num_parts=4, hidden_channels=3, shared=shared).double()
    if shared:  # eval-mode BN with non-trivial statistics
        with torch.no_grad():
            layer.bn.running_mean.uniform_(-1, 1)
            layer.bn.running_var.uniform_(0.5, 2)
            layer.bn.weight.uniform_(0.5, 2)
            layer.bn.bias.uniform_(-1, 1)
            layer.score_bn.running_mean.uniform_(-1, 1)
            layer.score_bn.running_var.uniform_(0.1, 4)
            layer.score_bn.weight.uniform_(0.5, 3)
        layer.eval()
    x = torch.randn(3, 2, 6, 4, 2, dtype=torch.float64)
    parts, s = layer(x)
    ref_parts, ref_s = _naive(layer, x.flatten(0, 1))
    torch.testing.assert_close(parts, ref_parts.view(3, 2, 4, 6))
    torch.testing.assert_close(s, ref_s.view(3, 2, 4, 4, 2))


@pytest.mark.parametrize("shared", [False, True])
def test_gradients_reach_every_parameter(shared):
    torch.manual_seed(2)
    layer = MultiPartSpatialAttention(5, num_parts=3, hidden_channels=4, shared=shared)
    parts, s = layer(torch.randn(2, 3, 5, 3, 2))
    (parts.pow(2).sum() + hellinger_diversity(s.flatten(-2))).backward()
    frozen = [name for name, p in layer.named_parameters() if not p.requires_grad]
    assert frozen == (["score_bn.bias"] if shared else [])
    for name, p in layer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_parameter_counts_and_repr():
    per_part = MultiPartSpatialAttention(2048, num_parts=3, hidden_channels=64)
    shared = MultiPartSpatialAttention(2048, num_parts=3, hidden_channels=64, shared=True)
    assert sum(p.numel() for p in per_part.parameters()) == 3 * (2048 * 64 + 64) + 3 * 64
    # the authors' SattentionNet: conv1 2048 -> 64, bn1 (64), conv2 64 -> 3, bn2 (3)
    assert sum(p.numel() for p in shared.parameters()) == 2048 * 64 + 2 * 64 + 64 * 3 + 2 * 3
    assert sum(p.numel() for p in shared.parameters() if p.requires_grad) == (
        2048 * 64 + 2 * 64 + 64 * 3 + 3)  # bn2's shift is frozen
    assert repr(per_part) == "MultiPartSpatialAttention(2048, num_parts=3, hidden_channels=64)"
    assert repr(shared).endswith("hidden_channels=64, shared=True)")


def test_shared_scores_go_through_a_per_part_temperature():
    # the authors' bn2 after the score convolution: in eval mode part k's scores are
    # (e - mu_k) / sqrt(var_k + eps) * gamma_k + beta_k; mu_k and beta_k are constant over
    # the cells (the softmax ignores them), gamma_k / sqrt(var_k + eps) is a temperature
    torch.manual_seed(4)
    layer = MultiPartSpatialAttention(5, num_parts=3, hidden_channels=4, shared=True).double()
    layer.eval()
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    _, s_plain = layer(x)
    e = layer.score(torch.relu(layer.bn(layer.hidden(x))))  # the scores before bn2
    eps = layer.score_bn.eps
    torch.testing.assert_close(s_plain, torch.softmax(e.flatten(-2) / (1 + eps) ** 0.5,
                                                      dim=-1).view_as(s_plain))
    with torch.no_grad():
        layer.score_bn.weight.copy_(torch.tensor([1.0, 3.0, 1.0]))  # sharpen part 1 only
        layer.score_bn.running_var.fill_(4.0)  # and halve every part's scores
        layer.score_bn.running_mean.uniform_(-2, 2)  # constant over the cells: no effect
        layer.score_bn.bias.uniform_(-2, 2)  # likewise
    _, s = layer(x)
    scale = torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64) / (4 + eps) ** 0.5
    expected = torch.softmax(e.flatten(-2) * scale[:, None], dim=-1).view_as(s)
    torch.testing.assert_close(s, expected)
    assert not torch.allclose(s[:, 1], s_plain[:, 1], atol=1e-3)  # not ignored by the softmax


def test_errors():
    layer = MultiPartSpatialAttention(4, num_parts=2, hidden_channels=3)
    with pytest.raises(ValueError, match=r"\(\*, 4, h, w\).*got \(2, 3, 5, 5\)"):
        layer(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"got \(4, 5\)"):
        layer(torch.randn(4, 5))
    for kwargs, name in (({"num_parts": 0}, "num_parts"), ({"hidden_channels": 0},
                                                           "hidden_channels")):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            MultiPartSpatialAttention(4, **kwargs)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        MultiPartSpatialAttention(0)


def test_diversity_of_disjoint_one_hot_maps_is_zero():
    # K = 3 maps on 4 cells, each one-hot on its own cell; a batch of 2 x 5 frames
    maps = torch.zeros(2, 5, 3, 4)
    maps[..., 0, 1] = maps[..., 1, 3] = maps[..., 2, 0] = 1.0
    assert hellinger_diversity(maps).item() == pytest.approx(0.0, abs=1e-12)
    assert hellinger_diversity(maps, reduction="none").shape == (2, 5)


@pytest.mark.parametrize("K", [1, 2, 3, 6])
def test_diversity_of_identical_uniform_maps_is_k_times_k_minus_one(K):
    L = 8
    maps = torch.full((4, K, L), 1.0 / L)
    # Q Q^T is all ones: K (K - 1) off-diagonal entries of 1, a zero diagonal
    assert hellinger_diversity(maps).item() == pytest.approx(K * (K - 1), rel=1e-6)
    assert hellinger_diversity(maps, reduction="sum").item() == pytest.approx(4 * K * (K - 1),
                                                                            rel=1e-6)


def test_diversity_by_hand_and_its_hellinger_form():
    # p = (1, 0), q = (1/2, 1/2): sum_l sqrt(p_l q_l) = sqrt(1/2) = 1 - H^2(p, q)
    # R = 2 * (sqrt(1/2))^2 = 1; and a second frame with p = q = (1/2, 1/2): R = 2
    maps = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])
    torch.testing.assert_close(hellinger_diversity(maps, reduction="none"),
                               torch.tensor([1.0, 2.0]))
    assert hellinger_diversity(maps).item() == pytest.approx(1.5)
    # invariant to a permutation of the cells applied to all maps of a frame
    g = torch.Generator().manual_seed(0)
    s = torch.softmax(torch.randn(3, 4, 10, generator=g), dim=-1)
    perm = torch.randperm(10, generator=g)
    torch.testing.assert_close(hellinger_diversity(s[..., perm], "none"),
                               hellinger_diversity(s, "none"))


def test_diversity_gradient_is_finite_where_the_softmax_underflows():
    logits = torch.tensor([[[0.0, -200.0, 5.0], [3.0, 0.0, -200.0]]], requires_grad=True)
    s = torch.softmax(logits, dim=-1)
    assert bool((s == 0).any())  # exact zeros in float32
    hellinger_diversity(s).backward()
    assert bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_diversity_of_half_precision_maps_is_computed_in_float32(dtype):
    # disjoint one-hot maps: clamping the zeros at float16's smallest normal number
    # (6.1e-5, square root 0.0078) would give R = 0.0015 instead of 0
    maps = torch.zeros(2, 3, 4)
    maps[..., 0, 1] = maps[..., 1, 3] = maps[..., 2, 0] = 1.0
    r = hellinger_diversity(maps.to(dtype))
    assert r.dtype == torch.float32
    assert r.item() < 1e-30
    # near-uniform maps: the float32 value of the rounded maps, not a bfloat16 blur
    g = torch.Generator().manual_seed(0)
    s = torch.softmax(0.1 * torch.randn(4, 6, 32, generator=g), dim=-1).to(dtype)
    r = hellinger_diversity(s, reduction="none")
    assert r.dtype == torch.float32
    torch.testing.assert_close(r, hellinger_diversity(s.float(), reduction="none"))
    # gradients reach the half-precision maps, in their dtype
    s = s.clone().requires_grad_(True)
    hellinger_diversity(s).backward()
    assert s.grad.dtype == dtype and bool(torch.isfinite(s.grad.float()).all())


def test_diversity_errors():
    with pytest.raises(ValueError, match=r"\(\*, K, L\).*got \(5,\)"):
        hellinger_diversity(torch.ones(5))
    with pytest.raises(ValueError, match="unknown reduction 'max'"):
        hellinger_diversity(torch.ones(2, 3), reduction="max")


def test_docstring_examples_run():
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
