import doctest
import math

import pytest
import torch

import stgraph.nn.sta as sta_module
from stgraph.nn import (
    SpatialTemporalAttention,
    STAOutput,
    inter_frame_regularization,
    sta_row_blocks,
)


def _two_frame_maps():
    """B = 1, T = 2, C = 2, 2 x 2 maps; rows are the K = 2 blocks.

    Frame 1 has the same energy in every cell (uniform g), so its block scores are
    (1/2, 1/2) while frame 0's are (1/4, 3/4): the columns of s do not sum to 1 over the
    frames, and S(n, k) normalised over the frames differs from s normalised over the blocks.
    Frame 1's rows differ from frame 0's, so the chosen frame of each block shows in the maps.
    """
    f = torch.zeros(1, 2, 2, 2, 2, dtype=torch.float64)
    f[0, 0, 0] = torch.tensor([[1.0, 0.0], [2.0, 1.0]])  # frame 0, channel 0
    f[0, 0, 1] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # frame 0, channel 1
    f[0, 1, 0] = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # frame 1, channel 0
    f[0, 1, 1] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # frame 1, channel 1
    return f


def test_scores_chosen_frames_and_maps_by_hand():
    f = _two_frame_maps()
    out = SpatialTemporalAttention(num_blocks=2)(f)  # eps = 1e-12: below the tolerance
    assert isinstance(out, STAOutput)
    # energies: frame 0 [[1, 1], [4, 2]] (sum 8), frame 1 [[1, 1], [1, 1]] (sum 4)
    g0 = torch.tensor([[1 / 8, 1 / 8], [4 / 8, 2 / 8]], dtype=torch.float64)
    g1 = torch.full((2, 2), 1 / 4, dtype=torch.float64)
    torch.testing.assert_close(out.spatial[0], torch.stack([g0, g1]))
    # block sums s_0 = (1/4, 3/4), s_1 = (1/2, 1/2); S(n, k) = s_{n,k} / sum_n s_{n,k}:
    # block 0: (1/4, 1/2) / (3/4) = (1/3, 2/3); block 1: (3/4, 1/2) / (5/4) = (3/5, 2/5)
    S = torch.tensor([[1 / 3, 3 / 5], [2 / 3, 2 / 5]], dtype=torch.float64)  # S[n, k]
    torch.testing.assert_close(out.scores[0], S)
    # (normalised over the blocks instead it would be s itself: [[1/4, 3/4], [1/2, 1/2]])
    # block 0 (row 0) is taken from frame 1 (2/3 > 1/3), block 1 (row 1) from frame 0
    # (3/5 > 2/5)
    assert out.frames.tolist() == [[1, 0]]
    disc = torch.tensor([[[0.0, 1.0], [2.0, 1.0]],  # channel 0: row 0 of f_1, row 1 of f_0
                         [[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # channel 1
    torch.testing.assert_close(out.discriminative[0], disc)
    # row 0: 1/3 f_0 + 2/3 f_1; row 1: 3/5 f_0 + 2/5 f_1
    # channel 0: 1/3 (1, 0) + 2/3 (0, 1) = (1/3, 2/3); 3/5 (2, 1) + 2/5 (1, 0) = (8/5, 3/5)
    # channel 1: 1/3 (0, 1) + 2/3 (1, 0) = (2/3, 1/3); 3/5 (0, 1) + 2/5 (0, 1) = (0, 1)
    glob = torch.tensor([[[1 / 3, 2 / 3], [8 / 5, 3 / 5]],
                         [[2 / 3, 1 / 3], [0.0, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(out.global_map[0], glob)


def test_regularizer_by_hand():
    f = _two_frame_maps()
    g = SpatialTemporalAttention(num_blocks=2)(f).spatial
    # g_0 - g_1 = [[-1/8, -1/8], [1/4, 0]]
    expected = math.sqrt(1 / 64 + 1 / 64 + 1 / 16)  # = sqrt(6) / 8
    assert inter_frame_regularization(g).item() == pytest.approx(expected, rel=1e-9)
    assert inter_frame_regularization(g, weight=0.3).item() == pytest.approx(0.3 * expected)
    assert inter_frame_regularization(g, pairs="first_last").item() == pytest.approx(expected)


def test_regularizer_pairs_and_reduction_by_hand():
    # frames 0 and 1 attend to cell (0, 0), frame 2 to cell (1, 1): distances 0, sqrt 2, sqrt 2
    g = torch.zeros(2, 3, 2, 2)
    g[:, :2, 0, 0] = 1.0
    g[:, 2, 1, 1] = 1.0
    g[1] = 0.25  # second clip: identical uniform maps
    per_clip = inter_frame_regularization(g, reduction="none")
    torch.testing.assert_close(per_clip, torch.tensor([2 * math.sqrt(2) / 3, 0.0]))
    first_last = inter_frame_regularization(g, pairs="first_last", weight=2.0, reduction="none")
    torch.testing.assert_close(first_last, torch.tensor([2 * math.sqrt(2), 0.0]))
    assert inter_frame_regularization(g).item() == pytest.approx(math.sqrt(2) / 3)


def test_regularizer_of_one_frame_is_zero_and_differentiable():
    g = torch.rand(3, 1, 4, 2, requires_grad=True)
    reg = inter_frame_regularization(g)
    assert reg.item() == 0.0
    reg.backward()
    assert torch.equal(g.grad, torch.zeros_like(g))
    # identical frames: zero distance, finite (zero) gradient
    g = torch.full((2, 4, 4, 2), 1 / 8, requires_grad=True)
    inter_frame_regularization(g).backward()
    assert torch.isfinite(g.grad).all()


def test_attention_sums_to_one_and_is_non_negative():
    torch.manual_seed(0)
    out = SpatialTemporalAttention(num_blocks=4)(torch.randn(3, 5, 16, 8, 4))
    assert out.spatial.shape == (3, 5, 8, 4) and (out.spatial >= 0).all()
    torch.testing.assert_close(out.spatial.sum(dim=(-2, -1)), torch.ones(3, 5))
    assert out.scores.shape == (3, 5, 4) and (out.scores >= 0).all()
    torch.testing.assert_close(out.scores.sum(dim=1), torch.ones(3, 4))
    assert out.frames.shape == (3, 4) and out.frames.dtype == torch.long
    assert out.discriminative.shape == out.global_map.shape == (3, 16, 8, 4)


def test_invariant_to_frame_order():
    torch.manual_seed(1)
    f = torch.randn(2, 6, 8, 8, 3, dtype=torch.float64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    sta = SpatialTemporalAttention(num_blocks=4)
    a, b = sta(f), sta(f[:, perm])
    torch.testing.assert_close(b.global_map, a.global_map, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.discriminative, a.discriminative, rtol=0, atol=0)
    torch.testing.assert_close(b.scores, a.scores[:, perm])
    torch.testing.assert_close(perm[b.frames], a.frames)
    torch.testing.assert_close(inter_frame_regularization(b.spatial),
                               inter_frame_regularization(a.spatial))
    # the first-and-last pair is not order-invariant
    assert not torch.allclose(inter_frame_regularization(b.spatial, pairs="first_last"),
                              inter_frame_regularization(a.spatial, pairs="first_last"))


def _reference(f, K, eps):
    """Loops over clips, frames and blocks, straight from the equations."""
    B, T, C, h, w = f.shape
    blocks = [[r for r in range(h) if r * K // h == k] for k in range(K)]
    S = torch.zeros(B, T, K, dtype=f.dtype)
    disc = torch.zeros(B, C, h, w, dtype=f.dtype)
    glob = torch.zeros(B, C, h, w, dtype=f.dtype)
    for b in range(B):
        energy = (f[b] ** 2).sum(dim=1) + eps  # (T, h, w)
        g = energy / energy.sum(dim=(1, 2), keepdim=True)
        s = torch.stack([torch.stack([g[n, rows].sum() for rows in blocks]) for n in range(T)])
        S[b] = s / s.sum(dim=0)
        for k, rows in enumerate(blocks):
            best = max(range(T), key=lambda n, k=k: (S[b, n, k].item(), -n))
            disc[b, :, rows] = f[b, best][:, rows]
            glob[b, :, rows] = sum(S[b, n, k] * f[b, n][:, rows] for n in range(T))
    return S, disc, glob


@pytest.mark.parametrize("h,K", [(5, 3), (6, 4), (4, 4), (7, 1)])
def test_matches_a_loop_reference_when_K_does_not_divide_h(h, K):
    torch.manual_seed(h * 10 + K)
    f = torch.randn(2, 3, 4, h, 2, dtype=torch.float64)
    out = SpatialTemporalAttention(num_blocks=K)(f)
    S, disc, glob = _reference(f, K, eps=1e-12)
    torch.testing.assert_close(out.scores, S)
    torch.testing.assert_close(out.discriminative, disc)
    torch.testing.assert_close(out.global_map, glob)


def test_row_blocks_partition_near_equal():
    assert sta_row_blocks(16, 4).tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    for h in range(1, 20):
        for K in range(1, h + 1):
            sizes = torch.bincount(sta_row_blocks(h, K), minlength=K)
            assert sizes.numel() == K and sizes.min() >= h // K and sizes.max() <= -(-h // K)


def test_one_block_is_temporal_average_and_ties_take_the_first_frame():
    torch.manual_seed(2)
    f = torch.randn(2, 4, 3, 4, 2, dtype=torch.float64)
    out = SpatialTemporalAttention(num_blocks=1)(f)
    # K = 1: every frame's block score is sum g = 1, so S = 1/T and X_2 is the mean frame
    torch.testing.assert_close(out.scores, torch.full((2, 4, 1), 0.25, dtype=torch.float64))
    torch.testing.assert_close(out.global_map, f.mean(dim=1))
    assert out.frames.tolist() == [[0], [0]]  # all tied: the earliest frame
    torch.testing.assert_close(out.discriminative, f[:, 0])


def test_all_zero_frame_gets_uniform_attention():
    f = torch.zeros(1, 2, 3, 4, 2)
    f[0, 1] = 1.0
    out = SpatialTemporalAttention(num_blocks=2)(f)
    torch.testing.assert_close(out.spatial, torch.full((1, 2, 4, 2), 1 / 8))
    assert torch.isfinite(out.scores).all()


def test_eps_zero_is_refused_as_it_gives_nan_for_an_all_zero_frame():
    f = torch.zeros(1, 2, 3, 4, 2)
    f[0, 1] = 1.0
    energy = f.pow(2).sum(dim=2)  # what eps = 0 would divide: 0 / 0 for frame 0
    assert bool(torch.isnan(energy / energy.sum(dim=(-2, -1), keepdim=True)).any())
    with pytest.raises(ValueError, match=r"eps must be finite and > 0 .* got 0\.0"):
        SpatialTemporalAttention(num_blocks=2, eps=0.0)
    out = SpatialTemporalAttention(num_blocks=2, eps=1e-30)(f)  # any positive eps works
    assert bool(torch.isfinite(out.spatial).all() and torch.isfinite(out.scores).all())


def test_half_precision_maps_are_attended_in_float32():
    # 16 channels of 100: an energy of 160000, past float16's largest value
    f = torch.full((1, 2, 16, 4, 2), 100.0, dtype=torch.float16)
    out = SpatialTemporalAttention(num_blocks=2)(f)
    assert out.spatial.dtype == torch.float32 and out.global_map.dtype == torch.float16
    torch.testing.assert_close(out.spatial, torch.full((1, 2, 4, 2), 1 / 8))
    assert torch.isfinite(out.global_map.float()).all()


def test_gradcheck():
    torch.manual_seed(3)
    f = torch.randn(2, 3, 4, 4, 2, dtype=torch.float64, requires_grad=True)
    sta = SpatialTemporalAttention(num_blocks=2)

    def fn(x):
        out = sta(x)
        return (out.scores, out.discriminative, out.global_map,
                inter_frame_regularization(out.spatial, reduction="none"))

    assert torch.autograd.gradcheck(fn, (f,))


def test_errors():
    sta = SpatialTemporalAttention(num_blocks=4)
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\), got \(2, 8, 4, 2\)"):
        sta(torch.randn(2, 8, 4, 2))
    with pytest.raises(ValueError, match="num_blocks=4 horizontal blocks .* got h=3"):
        sta(torch.randn(2, 2, 8, 3, 2))
    with pytest.raises(ValueError, match="at least one frame"):
        sta(torch.randn(2, 0, 8, 4, 2))
    with pytest.raises(ValueError, match="num_blocks must be >= 1, got 0"):
        SpatialTemporalAttention(num_blocks=0)
    for eps in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be finite and > 0"):
            SpatialTemporalAttention(eps=eps)
    with pytest.raises(ValueError, match=r"\(B, T, h, w\), got \(2, 3, 8\)"):
        inter_frame_regularization(torch.rand(2, 3, 8))
    with pytest.raises(ValueError, match="unknown pairs 'random'; choose one of: all, first_last"):
        inter_frame_regularization(torch.rand(2, 3, 4, 2), pairs="random")
    with pytest.raises(ValueError, match="unknown reduction 'sum'"):
        inter_frame_regularization(torch.rand(2, 3, 4, 2), reduction="sum")
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        sta_row_blocks(4, 0)


def test_repr_and_docstring_examples():
    assert repr(SpatialTemporalAttention(num_blocks=3)) == "SpatialTemporalAttention(num_blocks=3)"
    assert doctest.testmod(sta_module, optionflags=doctest.ELLIPSIS).failed == 0
