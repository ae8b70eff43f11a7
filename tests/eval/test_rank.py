"""Tests of stgraph.eval.evaluate_rank against hand values and a per-query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stgraph.eval import evaluate_rank


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid's ``eval_market1501`` loop, with a stable sort and a padded CMC.

    Two departures from torchreid, both documented in ``evaluate_rank``: ties are
    sorted by gallery index, and each query's CMC is padded with its last value to
    ``max_rank`` instead of shortening ``max_rank`` to the gallery size.
    """
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap = [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    if not all_cmc:
        return None
    return np.asarray(all_cmc, dtype=np.float64).mean(0), np.asarray(all_ap), len(all_ap)


# 3 queries x 5 gallery items, worked out by hand.
G_PIDS = np.array([1, 2, 1, 2, 3])
G_CAMS = np.array([0, 1, 1, 1, 0])
Q_PIDS = np.array([1, 2, 3])
Q_CAMS = np.array([0, 0, 0])
DIST = np.array([
    # q0 (id 1, cam 0): g0 removed (id 1, cam 0); kept order g3 g4 g2 g1 -> match at rank 3
    [0.0, 0.5, 0.3, 0.1, 0.2],
    # q1 (id 2, cam 0): order g1 g0 g3 g2 g4 -> matches at ranks 1 and 3
    [0.2, 0.1, 0.4, 0.3, 0.5],
    # q2 (id 3, cam 0): its only match g4 shares camera 0 -> removed -> query skipped
    [0.1, 0.2, 0.3, 0.4, 0.5],
])


def test_hand_computed_case():
    out = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert out["num_valid_queries"] == 2
    np.testing.assert_allclose(out["all_AP"], [1 / 3, (1 + 2 / 3) / 2])
    assert out["mAP"] == pytest.approx((1 / 3 + 5 / 6) / 2)
    np.testing.assert_allclose(out["cmc"], [0.5, 0.5, 1.0, 1.0, 1.0])
    assert isinstance(out["mAP"], float) and isinstance(out["num_valid_queries"], int)


def test_cmc_padded_when_gallery_is_shorter_than_max_rank():
    out = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)  # max_rank 50 > 5 items
    assert out["cmc"].shape == (50,)
    np.testing.assert_allclose(out["cmc"][:3], [0.5, 0.5, 1.0])
    assert (out["cmc"][3:] == 1.0).all()
    out = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=2)
    np.testing.assert_allclose(out["cmc"], [0.5, 0.5])


def test_ties_keep_gallery_order():
    # all distances equal: ranked order is g0..g4; q1 (id 2) matches g1 and g3 -> ranks 2, 4
    out = evaluate_rank(np.zeros((1, 5)), [2], G_PIDS, [0], G_CAMS, max_rank=3)
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_allclose(out["cmc"], [0.0, 1.0, 1.0])


def test_same_camera_other_identity_is_kept():
    # gallery: (id 9, cam 0) nearest, then the match (id 1, cam 1); the query is (id 1, cam 0).
    # Only same id AND same camera is removed, so the distractor stays: match at rank 2.
    out = evaluate_rank(np.array([[0.1, 0.2]]), [1], [9, 1], [0], [0, 1], max_rank=2)
    assert out["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(out["cmc"], [0.0, 1.0])


def test_torch_inputs():
    out = evaluate_rank(torch.from_numpy(DIST).float(), torch.from_numpy(Q_PIDS),
                        torch.from_numpy(G_PIDS), torch.from_numpy(Q_CAMS),
                        torch.from_numpy(G_CAMS), max_rank=5)
    np.testing.assert_allclose(out["cmc"], [0.5, 0.5, 1.0, 1.0, 1.0])
    assert out["mAP"] == pytest.approx(7 / 12)


def _check_against_reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size):
    ref = reference_eval(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    if ref is None:
        with pytest.raises(ValueError, match="no query has a match"):
            evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size)
        return
    out = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size)
    ref_cmc, ref_ap, ref_valid = ref
    assert out["num_valid_queries"] == ref_valid
    np.testing.assert_allclose(out["cmc"], ref_cmc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["all_AP"], ref_ap, rtol=1e-12)
    assert out["mAP"] == pytest.approx(ref_ap.mean(), rel=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_matches_loop_reference_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(1, 120))
    num_ids, num_cams = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    dist = rng.integers(0, 6, size=(num_q, num_g)).astype(np.float32)  # many ties
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    max_rank = int(rng.integers(1, 60))
    chunk_size = int(rng.integers(1, 50))
    _check_against_reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), num_q=st.integers(1, 12), num_g=st.integers(1, 25),
       chunk_size=st.integers(1, 13), max_rank=st.integers(1, 30))
def test_matches_loop_reference_hypothesis(data, num_q, num_g, chunk_size, max_rank):
    ints = st.integers(0, 3)
    dist = np.array(data.draw(st.lists(st.integers(0, 4), min_size=num_q * num_g,
                                       max_size=num_q * num_g)), dtype=np.float64)
    dist = dist.reshape(num_q, num_g)
    arr = [np.array(data.draw(st.lists(ints, min_size=n, max_size=n)))
           for n in (num_q, num_g, num_q, num_g)]
    _check_against_reference(dist, arr[0], arr[1], arr[2], arr[3], max_rank, chunk_size)


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(7)
    dist = rng.random((100, 300))
    q_pids, g_pids = rng.integers(0, 20, 100), rng.integers(0, 20, 300)
    q_cams, g_cams = rng.integers(0, 6, 100), rng.integers(0, 6, 300)
    full = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, chunk_size=1000)
    for chunk in (1, 33):
        part = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, chunk_size=chunk)
        np.testing.assert_array_equal(part["cmc"], full["cmc"])
        np.testing.assert_array_equal(part["all_AP"], full["all_AP"])


def test_errors():
    args = (Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match=r"distmat of shape \(Q, G\), got \(15,\)"):
        evaluate_rank(DIST.ravel(), *args)
    with pytest.raises(ValueError, match=r"distmat has shape \(3, 5\), so g_pids must have "
                                         r"shape \(5,\); got \(4,\)"):
        evaluate_rank(DIST, Q_PIDS, G_PIDS[:4], Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match=r"q_camids must have shape \(3,\); got \(3, 1\)"):
        evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS[:, None], G_CAMS)
    with pytest.raises(ValueError, match="no query has a match"):
        evaluate_rank(DIST[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS)
    with pytest.raises(ValueError, match="no query has a match"):
        evaluate_rank(np.zeros((3, 0)), Q_PIDS, [], Q_CAMS, [])
    bad = DIST.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(bad, *args)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        evaluate_rank(DIST, *args, max_rank=0)
