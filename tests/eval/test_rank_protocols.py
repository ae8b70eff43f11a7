"""Tests of evaluate_rank's two protocols ("torchreid", "mars-official") by hand and by loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stgraph.eval import RANK_PROTOCOLS, evaluate_rank


def reference_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, protocol):
    """One query at a time, as common re-ID code and the MARS MATLAB code do.

    Per query: a stable ``np.argsort`` of its row, then a walk down the ranked list.
    ``"torchreid"``: drop same id + same camera, non-interpolated AP (torchreid's
    ``eval_market1501``). ``"mars-official"``: a line-by-line port of ``compute_AP.m``
    (MARS-evaluation): junk = id -1 or same id + same camera, good = same id, other
    camera; trapezoidal AP with ``old_precision`` starting at 1. Queries with no
    match are skipped; CMC is padded to ``max_rank`` with its last value.
    """
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        index = np.argsort(distmat[q], kind="stable")
        same_id = g_pids == q_pids[q]
        same_cam = g_camids == q_camids[q]
        junk = same_id & same_cam
        if protocol == "mars-official":
            junk = junk | (g_pids == -1)
        good = same_id & ~junk
        ngood = int(good.sum())
        if ngood == 0:
            continue
        cmc = np.zeros(max(len(index), max_rank))
        ap, old_recall, old_precision, found, j, njunk = 0.0, 0.0, 1.0, 0, 0, 0
        for n, g in enumerate(index):
            if junk[g]:
                njunk += 1
                continue
            if good[g]:
                if found == 0:
                    cmc[n - njunk:] = 1
                found += 1
            if protocol == "mars-official":
                recall, precision = found / ngood, found / (j + 1)
                ap += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
            elif good[g]:
                ap += found / (j + 1) / ngood
            j += 1
            if found == ngood:
                break
        all_cmc.append(cmc[:max_rank])
        all_ap.append(ap)
    if not all_ap:
        return None
    return np.mean(all_cmc, axis=0), np.asarray(all_ap)


# The MARS-official gallery holds the queries too. Query 0 is g0; query 1 is g6.
G_PIDS = np.array([1, -1, 0, 1, 1, 1, 3])
G_CAMS = np.array([0, 1, 1, 1, 0, 2, 0])
Q_PIDS = np.array([1, 3])
Q_CAMS = np.array([0, 0])
DIST = np.array([
    # q0 (id 1, cam 0) ranks g0 g5 g1 g2 g3 g4 g6. g0 is itself and g4 (id 1, cam 0) share its
    # camera: junk under both protocols; g1 (id -1) is junk under mars-official only;
    # g2 (id 0, a distractor) is an ordinary negative under both.
    #   torchreid:     g5 g1 g2 g3 g6 -> matches at ranks 1, 4: AP (1/1 + 2/4) / 2 = 3/4
    #   mars-official: g5 g2 g3 g6    -> goods at ranks 1, 3:
    #                  AP 1/2 (1 + 1)/2 + 1/2 (1/2 + 2/3)/2 = 1/2 + 7/24 = 19/24
    [0.0, 0.1, 0.2, 0.3, 0.35, 0.05, 0.9],
    # q1 (id 3, cam 0): its only id-3 item is itself (g6, same camera) -> skipped
    [0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.0],
])


def test_torchreid_protocol_by_hand():
    out = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4, protocol="torchreid")
    assert out["num_valid_queries"] == 1
    np.testing.assert_allclose(out["all_AP"], [3 / 4])
    np.testing.assert_allclose(out["cmc"], [1.0, 1.0, 1.0, 1.0])


def test_mars_official_protocol_by_hand():
    out = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4,
                        protocol="mars-official")
    assert out["num_valid_queries"] == 1
    np.testing.assert_allclose(out["all_AP"], [19 / 24])
    assert out["mAP"] == pytest.approx(19 / 24)
    np.testing.assert_allclose(out["cmc"], [1.0, 1.0, 1.0, 1.0])


def test_default_protocol_is_torchreid():
    default = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4)
    named = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4, protocol="torchreid")
    np.testing.assert_array_equal(default["all_AP"], named["all_AP"])
    np.testing.assert_array_equal(default["cmc"], named["cmc"])


def test_mars_official_ties_keep_gallery_order():
    # all distances equal: ranked g0..g6 -> g0 junk (itself), g1 junk (-1), g2 negative (r1),
    # g3 good (r2), g4 junk (same camera), g5 good (r3), g6 negative (r4)
    # AP = 1/2 (0/1 + 1/2)/2 + 1/2 (1/2 + 2/3)/2 = 1/8 + 7/24 = 5/12
    out = evaluate_rank(np.zeros((1, 7)), [1], G_PIDS, [0], G_CAMS, max_rank=3,
                        protocol="mars-official")
    assert out["mAP"] == pytest.approx(5 / 12)
    np.testing.assert_allclose(out["cmc"], [0.0, 1.0, 1.0])
    # torchreid on the same list: g1 r1, g2 r2, g3 hit r3, g5 hit r4, g6 r5 -> (1/3 + 2/4) / 2
    out = evaluate_rank(np.zeros((1, 7)), [1], G_PIDS, [0], G_CAMS, max_rank=3)
    assert out["mAP"] == pytest.approx(5 / 12)
    np.testing.assert_allclose(out["cmc"], [0.0, 0.0, 1.0])


def test_mars_official_first_good_at_rank_two():
    # the trapezoid's left precision at a first good at rank 2 is 0/1 (the negative before it)
    out = evaluate_rank(np.array([[0.1, 0.2]]), [1], [0, 1], [0], [1, 1], max_rank=2,
                        protocol="mars-official")
    assert out["mAP"] == pytest.approx((0 + 1 / 2) / 2)
    np.testing.assert_allclose(out["cmc"], [0.0, 1.0])


def test_mars_official_query_in_gallery_is_junk():
    # the query (g0, distance 0) is in the gallery; removing it changes nothing
    with_query = evaluate_rank(DIST[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS,
                               protocol="mars-official")
    without = evaluate_rank(DIST[:1, 1:], Q_PIDS[:1], G_PIDS[1:], Q_CAMS[:1], G_CAMS[1:],
                            protocol="mars-official")
    np.testing.assert_array_equal(with_query["all_AP"], without["all_AP"])
    np.testing.assert_array_equal(with_query["cmc"], without["cmc"])


def test_junk_id_query_is_skipped_under_mars_official():
    # a query of id -1: its "matches" are junk, so it has none; the other query stays valid
    out = evaluate_rank(np.array([[0.1, 0.2], [0.2, 0.1]]), [-1, 1], [-1, 1], [0, 0], [1, 1],
                        max_rank=2, protocol="mars-official")
    assert out["num_valid_queries"] == 1
    np.testing.assert_allclose(out["all_AP"], [1.0])
    with pytest.raises(ValueError, match=r"no query has a match .* person id -1"):
        evaluate_rank(np.array([[0.1, 0.2]]), [-1], [-1, 2], [0], [1, 1],
                      protocol="mars-official")
    # torchreid treats -1 as any other identity
    out = evaluate_rank(np.array([[0.1, 0.2]]), [-1], [-1, 2], [0], [1, 1], max_rank=2)
    np.testing.assert_allclose(out["all_AP"], [1.0])


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol 'mars'; choose one of: "
                                         "torchreid, mars-official"):
        evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, protocol="mars")
    assert RANK_PROTOCOLS == ("torchreid", "mars-official")


def _check(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size, protocol):
    ref = reference_loop(dist, q_pids, g_pids, q_cams, g_cams, max_rank, protocol)
    args = (dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size)
    if ref is None:
        with pytest.raises(ValueError, match="no query has a match"):
            evaluate_rank(*args, protocol=protocol)
        return
    out = evaluate_rank(*args, protocol=protocol)
    ref_cmc, ref_ap = ref
    assert out["num_valid_queries"] == len(ref_ap)
    np.testing.assert_allclose(out["cmc"], ref_cmc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["all_AP"], ref_ap, rtol=1e-12, atol=1e-15)
    assert out["mAP"] == pytest.approx(ref_ap.mean(), rel=1e-12)


@pytest.mark.parametrize("protocol", RANK_PROTOCOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_loop_on_random_data_with_ties(seed, dtype, protocol):
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(1, 150))
    num_ids, num_cams = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    dist = rng.integers(-3, 4, size=(num_q, num_g)).astype(dtype)  # many ties
    if dtype is np.int64 and seed % 2:
        dist *= 2**40  # beyond int32: the stable argsort path
    elif dtype is not np.int64:
        dist[rng.random(dist.shape) < 0.2] *= -0.0  # -0.0 ties with +0.0
        dist[rng.random(dist.shape) < 0.05] = np.inf
        if seed % 2:  # not representable in float32: the stable argsort path
            dist += rng.random(dist.shape).astype(dtype) * 1e-9 * (rng.random(dist.shape) < 0.3)
    q_pids, g_pids = rng.integers(-1, num_ids, num_q), rng.integers(-1, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    max_rank = int(rng.integers(1, 60))
    chunk_size = int(rng.integers(1, 50))
    _check(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size, protocol)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), num_q=st.integers(1, 10), num_g=st.integers(1, 25),
       chunk_size=st.integers(1, 13), max_rank=st.integers(1, 30),
       protocol=st.sampled_from(RANK_PROTOCOLS))
def test_matches_reference_loop_hypothesis(data, num_q, num_g, chunk_size, max_rank, protocol):
    dist = np.array(data.draw(st.lists(st.integers(0, 4), min_size=num_q * num_g,
                                       max_size=num_q * num_g)), dtype=np.float32)
    dist = dist.reshape(num_q, num_g)
    ids, cams = st.integers(-1, 3), st.integers(0, 2)
    q_pids, g_pids = (np.array(data.draw(st.lists(ids, min_size=n, max_size=n)))
                      for n in (num_q, num_g))
    q_cams, g_cams = (np.array(data.draw(st.lists(cams, min_size=n, max_size=n)))
                      for n in (num_q, num_g))
    _check(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size, protocol)


def test_mars_official_with_queries_inside_the_gallery():
    # the MARS layout: queries are rows of the gallery; ids include -1 junk and 0 distractors
    rng = np.random.default_rng(3)
    num_g = 300
    g_pids = rng.integers(-1, 30, num_g)
    g_cams = rng.integers(1, 7, num_g)
    q_idx = rng.choice(np.flatnonzero(g_pids > 0), 60, replace=False)
    feats = rng.standard_normal((num_g, 8)).astype(np.float32)
    dist = np.linalg.norm(feats[q_idx, None] - feats[None], axis=-1)
    _check(dist, g_pids[q_idx], g_pids, g_cams[q_idx], g_cams, 50, 16, "mars-official")
