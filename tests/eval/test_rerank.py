"""Tests of stgraph.eval.re_ranking against a plain transcription of the authors' algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stgraph.eval import re_ranking


def reference_re_ranking(qf, gf, k1, k2, lambda_value):
    """k-reciprocal re-ranking as the authors' ``re_ranking_feature.py``, loop by loop.

    Zhong et al., CVPR 2017; the widely copied numpy version (also torchreid's), kept in
    float64 so that the comparison is tight.
    """
    query_num = qf.shape[0]
    feat = np.concatenate([qf, gf]).astype(np.float64)
    all_num = feat.shape[0]
    sq = (feat**2).sum(axis=1, keepdims=True)
    original_dist = sq + sq.T - 2 * feat @ feat.T
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for candidate in k_reciprocal_index:
            candidate_forward = initial_rank[candidate, :half]
            candidate_backward = initial_rank[candidate_forward, :half]
            fi_candidate = np.where(candidate_backward == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward[fi_candidate]
            if (len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index))
                    > 2.0 / 3 * len(candidate_k_reciprocal_index)):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,
                                                         candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(all_num):
            V_qe[i] = np.mean(V[initial_rank[i, :k2]], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist)
    for i in range(query_num):
        temp_min = np.zeros(all_num)
        for j in np.where(V[i] != 0)[0]:
            temp_min[inv_index[j]] += np.minimum(V[i, j], V[inv_index[j], j])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:, query_num:]


def _clustered(rng, num, dim, num_ids, spread):
    centres = rng.standard_normal((num_ids, dim))
    ids = rng.integers(0, num_ids, num)
    return centres[ids] + spread * rng.standard_normal((num, dim))


@pytest.mark.parametrize(("num_q", "num_g", "k1", "k2", "lam", "spread", "seed"), [
    (12, 60, 20, 6, 0.3, 0.3, 0),  # the paper's defaults, clustered: the 2/3 rule fires
    (20, 50, 20, 6, 0.3, 2.0, 1),  # unclustered
    (7, 30, 5, 3, 0.5, 0.5, 2),  # odd k1: round(5 / 2) = 2, half to even
    (5, 9, 20, 6, 0.3, 0.5, 3),  # k1 + 1 > N: every item is a neighbour
    (10, 40, 6, 1, 0.0, 0.4, 4),  # no query expansion, pure Jaccard
    (1, 25, 3, 2, 0.8, 0.6, 5),
    (30, 1, 4, 2, 0.3, 0.6, 6),
])
def test_matches_reference(num_q, num_g, k1, k2, lam, spread, seed):
    rng = np.random.default_rng(seed)
    feat = _clustered(rng, num_q + num_g, 16, max(2, (num_q + num_g) // 8), spread)
    qf, gf = feat[:num_q], feat[num_q:]
    ref = reference_re_ranking(qf, gf, k1, k2, lam)
    out = re_ranking(torch.from_numpy(qf), torch.from_numpy(gf), k1=k1, k2=k2,
                     lambda_value=lam)
    assert out.shape == (num_q, num_g) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-10)
    out32 = re_ranking(qf.astype(np.float32), gf.astype(np.float32), k1=k1, k2=k2,
                       lambda_value=lam)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=0, atol=1e-5)


def test_block_size_does_not_change_the_result():
    rng = np.random.default_rng(7)
    feat = torch.from_numpy(_clustered(rng, 90, 8, 12, 0.4))
    qf, gf = feat[:25], feat[25:]
    full = re_ranking(qf, gf)
    for block in (1, 7, 64):  # block 1: Jaccard pairs in chunks of 2048
        np.testing.assert_allclose(re_ranking(qf, gf, block_size=block).numpy(), full.numpy(),
                                   rtol=0, atol=1e-12)


def test_lambda_one_returns_the_normalised_original_distance():
    rng = np.random.default_rng(8)
    qf, gf = rng.standard_normal((6, 5)), rng.standard_normal((20, 5))
    feat = np.concatenate([qf, gf])
    sq_dist = ((feat[:, None] - feat[None]) ** 2).sum(-1)
    expected = (sq_dist / sq_dist.max(axis=1, keepdims=True))[:6, 6:]
    out = re_ranking(qf, gf, lambda_value=1.0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    unit = feat / np.linalg.norm(feat, axis=1, keepdims=True)
    cos_dist = np.clip(1 - unit @ unit.T, 0, None)
    expected = (cos_dist / cos_dist.max(axis=1, keepdims=True))[:6, 6:]
    out = re_ranking(qf, gf, lambda_value=1.0, metric="cosine")
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_range_and_self_match():
    # a gallery copy of each query: the re-ranked distance to it is the row minimum
    rng = np.random.default_rng(9)
    gf = torch.from_numpy(rng.standard_normal((40, 6))).float()
    qf = gf[:5].clone()
    out = re_ranking(qf, gf)
    assert out.shape == (5, 40) and torch.isfinite(out).all()
    assert (out >= -1e-6).all() and (out <= 1 + 1e-6).all()
    assert (out.argmin(dim=1) == torch.arange(5)).all()


def test_errors():
    qf, gf = torch.zeros(2, 4), torch.ones(3, 4)
    with pytest.raises(ValueError, match="unknown metric 'l1'; choose one of: euclidean, cosine"):
        re_ranking(qf, gf, metric="l1")
    with pytest.raises(ValueError, match="k1 and k2 must be >= 1, got k1=0, k2=6"):
        re_ranking(qf, gf, k1=0)
    with pytest.raises(ValueError, match=r"lambda_value must be in \[0, 1\], got 1.5"):
        re_ranking(qf, gf, lambda_value=1.5)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        re_ranking(qf, gf, block_size=0)
    with pytest.raises(ValueError, match=r"expected gf of shape \(G, D\) with at least one row, "
                                         r"got \(0, 4\)"):
        re_ranking(qf, gf[:0])
    with pytest.raises(ValueError, match=r"expected qf of shape \(Q, D\).*got \(4,\)"):
        re_ranking(qf[0], gf)
    with pytest.raises(ValueError, match=r"widths differ: qf \(2, 4\) vs gf \(3, 5\)"):
        re_ranking(qf, torch.ones(3, 5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        re_ranking(qf, torch.full((3, 4), float("nan")))
