"""CMC and mAP for retrieval under the standard re-ID protocols, vectorised."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["RANK_PROTOCOLS", "evaluate_rank"]

#: Names accepted by ``evaluate_rank(..., protocol=...)``.
RANK_PROTOCOLS = ("torchreid", "mars-official")

# Integer dtypes whose values fit in an int32 sort key (float16/float32 go through their bits).
_INT32_SAFE = (np.bool_, np.int8, np.int16, np.int32, np.uint8, np.uint16)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _int32_keys(block: np.ndarray) -> np.ndarray | None:
    """Int32 keys with the order of ``block``'s values, or ``None`` if there are none.

    float16/float32 use their bit pattern (sign-magnitude turned into two's complement,
    -0.0 folded onto +0.0 first so both stay equal); float64 and int64 use it when every
    value is exactly a float32 / an int32, which is the case for float32 distances that
    were upcast. Otherwise the caller falls back to a stable argsort.
    """
    if block.dtype.type in _INT32_SAFE:
        return block.astype(np.int32)
    if block.dtype in (np.int64, np.uint32, np.uint64):
        if block.size and (block.min() < np.iinfo(np.int32).min
                           or block.max() > np.iinfo(np.int32).max):
            return None
        return block.astype(np.int32)
    if block.dtype == np.float64:
        single = block.astype(np.float32)
        if not np.array_equal(single, block):  # rounding (or overflow to inf) would reorder
            return None
        block = single
    elif block.dtype == np.float16:
        block = block.astype(np.float32)
    elif block.dtype != np.float32:
        return None
    bits = (block + np.float32(0.0)).view(np.int32)  # the sum is a copy with -0.0 -> +0.0
    bits ^= (bits >> 31) & np.int32(0x7FFFFFFF)  # negative floats: flip the magnitude bits
    return bits


_HIT, _JUNK = 1, 2  # labels of gallery items; 0: other


def _ranked_labels(block: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` of each row in the order of a stable row-wise argsort of ``block``.

    Same as ``np.take_along_axis(labels, np.argsort(block, axis=1, kind="stable"), 1)``.
    When the values fit in 32 bits each item becomes one int64,
    ``key << 32 | column << 2 | label``: the packed numbers are distinct and ordered by
    (value, column), so a plain (SIMD) sort of them is the stable sort, and the labels
    ride along without a gather.
    """
    keys = _int32_keys(block) if block.shape[1] < 2**30 else None
    if keys is None:
        order = np.argsort(block, axis=1, kind="stable")
        return np.take_along_axis(labels, order, axis=1)
    packed = keys.astype(np.int64)
    packed <<= 32
    packed |= np.arange(block.shape[1], dtype=np.int64) << 2
    packed |= labels
    packed.sort(axis=1)
    packed &= 3
    return packed


def evaluate_rank(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                  max_rank: int = 50, chunk_size: int = 256, *,
                  protocol: str = "torchreid") -> dict[str, Any]:
    r"""CMC curve and mAP of a query-gallery distance matrix, under a named protocol.

    For each query the gallery is sorted by increasing distance with a stable
    sort, so **ties keep gallery order** (torchreid's default quicksort breaks
    ties arbitrarily; MATLAB's ``sort`` is stable). Some gallery items are
    *junk*: removed from the ranked list, the others keep their order, ranks
    :math:`r = 1, 2, \dots`. The *matches* are the non-junk items with the
    query's identity. A query left without any match is skipped; CMC and mAP
    are averaged over the :math:`V` valid queries, with
    :math:`\mathrm{CMC}[k] = \frac{1}{V} \sum_q [\,r^{first}_q \le k + 1\,]`.

    ``protocol="torchreid"`` (the default; torchreid's ``eval_market1501``, and
    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015):
    junk = same identity *and* same camera (same-camera matches are trivial);
    no other identity is special. AP is non-interpolated,

    .. math::
        \mathrm{AP}_q = \frac{1}{|M_q|} \sum_{r \in M_q}
        \frac{|\{r' \in M_q : r' \le r\}|}{r}

    with :math:`M_q` the ranks of the query's matches. On MARS the caller
    passes torchreid's gallery: the 12180 test tracklets minus the 1980
    queries minus the 870 junk tracklets (person id -1), i.e. 9330 tracklets
    (checked on the official ``tracks_test_info.mat`` / ``query_IDX.mat``);
    140 of the 1980 queries then have no cross-camera match and are skipped.

    ``protocol="mars-official"`` (the MATLAB code of Zheng et al., "MARS: A
    Video Benchmark for Large-Scale Person Re-identification", ECCV 2016,
    ``utils/evaluation_mars.m`` and ``compute_AP.m`` of
    github.com/liangzheng06/MARS-evaluation): the gallery is **all** 12180 test
    tracklets, the queries included, which the caller passes. Junk = gallery
    items of person id -1 plus items with the query's identity and camera (so
    the query itself); distractors (id 0) are ordinary negatives. Junk wins
    over a match, so a query of id -1 has no match and is skipped. AP
    accumulates trapezoids of the precision-recall curve: for the
    :math:`i`-th match at rank :math:`r_i` (junk skipped) out of :math:`n`,

    .. math::
        \mathrm{AP}_q = \sum_{i=1}^{n} \frac{1}{n} \cdot
        \frac{p^{-}_i + p^{+}_i}{2}, \qquad
        p^{+}_i = \frac{i}{r_i}, \qquad
        p^{-}_i = \begin{cases} 1 & r_i = 1 \\ \frac{i - 1}{r_i - 1} & r_i > 1 \end{cases}

    i.e. ``ap += (recall - old_recall) * (old_precision + precision) / 2``
    with ``old_precision`` the precision at the previous non-junk item (1.0
    before the first), as in ``compute_AP.m``; its CMC is 1 from the first
    match's junk-skipped rank on, as here. The MATLAB code averages over all
    queries (every MARS query has a match, so nothing is skipped there).

    CMC is defined for every rank: when the gallery has fewer than
    ``max_rank`` items the curve is padded with its last value (1.0, every
    valid query has found its match by then) rather than shortened as
    torchreid does, so ``cmc[19]`` is always rank-20.

    Vectorised: per block of ``chunk_size`` queries, each gallery item is
    labelled (match / junk / other) by broadcasting, the labels are put in
    ranked order by one row-wise stable sort, and the ranks of the matches come
    from the positions of the labels and the junk counted before them; the
    block size only bounds memory (about ``40 * chunk_size * G`` bytes), it does
    not change the result. Distances that are float32 (or float64 / integers
    exactly representable in 32 bits) are sorted as packed
    ``(value, column, label)`` int64 numbers, several times faster than
    ``np.argsort(kind="stable")``, which the other dtypes use; the order is the
    same.

    Args:
        distmat (np.ndarray or Tensor): distances, smaller is more similar.
        q_pids, g_pids: identities of the queries and gallery items.
        q_camids, g_camids: cameras of the queries and gallery items.
        max_rank (int): length of the CMC curve. (default: :obj:`50`)
        chunk_size (int): queries per block. (default: :obj:`256`)
        protocol (str): ``"torchreid"`` or ``"mars-official"``, keyword only.
            (default: ``"torchreid"``)

    Shapes:
        - **input:** ``distmat`` :math:`(Q, G)`, ``q_pids``, ``q_camids`` :math:`(Q,)`,
          ``g_pids``, ``g_camids`` :math:`(G,)`
        - **output:** dict with ``"cmc"`` float ``np.ndarray (max_rank,)`` of
          fractions in [0, 1]; ``"mAP"`` float fraction; ``"num_valid_queries"``
          int :math:`V`; ``"all_AP"`` ``np.ndarray (V,)``, the APs of the valid
          queries in query order.

    Raises:
        ValueError: unknown protocol (the message lists the valid ones), shapes
            inconsistent (the message names them), NaN distances, ``max_rank < 1``
            or ``chunk_size < 1``, or no query has a match left in the gallery.

    Examples:
        >>> out = evaluate_rank(np.array([[0.1, 0.2, 0.3]]), [1], [1, 2, 1], [0], [1, 1, 1],
        ...                     max_rank=3)
        >>> out["cmc"].tolist(), round(out["mAP"], 4)
        ([1.0, 1.0, 1.0], 0.8333)
        >>> out = evaluate_rank(np.array([[0.1, 0.2, 0.3]]), [1], [1, 2, 1], [0], [1, 1, 1],
        ...                     max_rank=3, protocol="mars-official")
        >>> round(out["mAP"], 4)  # (1 + 1) / 2 / 2 + (1 / 2 + 2 / 3) / 2 / 2
        0.7917
    """
    if protocol not in RANK_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: "
                         f"{', '.join(RANK_PROTOCOLS)}")
    official = protocol == "mars-official"
    distmat = _to_numpy(distmat)
    q_pids, g_pids = _to_numpy(q_pids), _to_numpy(g_pids)
    q_camids, g_camids = _to_numpy(q_camids), _to_numpy(g_camids)
    if distmat.ndim != 2:
        raise ValueError(f"expected distmat of shape (Q, G), got {distmat.shape}")
    num_q, num_g = distmat.shape
    for name, arr, n in (("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                         ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)):
        if arr.shape != (n,):
            raise ValueError(f"distmat has shape {distmat.shape}, so {name} must have shape "
                             f"({n},); got {arr.shape}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if np.issubdtype(distmat.dtype, np.floating) and np.isnan(distmat).any():
        raise ValueError("distmat contains NaN")
    g_junk = g_pids == -1 if official else None  # (G,) junk for every query

    first_rank = np.zeros(num_q, dtype=np.int64)  # rank of the first match, 1-based
    ap = np.zeros(num_q, dtype=np.float64)
    valid = np.zeros(num_q, dtype=bool)
    for s in range(0, num_q if num_g > 0 else 0, chunk_size):
        e = min(s + chunk_size, num_q)
        c = e - s
        match = g_pids[None, :] == q_pids[s:e, None]  # (c, G), gallery order
        junk = match & (g_camids[None, :] == q_camids[s:e, None])  # same id, same camera
        if official:
            junk |= g_junk[None, :]
        labels = (match | junk).astype(np.int8)
        labels += junk  # _HIT (1): a match that is not junk; _JUNK (2); other 0
        ranked = _ranked_labels(distmat[s:e], labels)  # (c, G), ranked order
        # only the matches need a rank: take the labelled items (row-major) and count the
        # junk before each match in its row
        flat = np.flatnonzero(ranked)
        row, col = np.divmod(flat, num_g)
        is_junk = ranked.ravel()[flat] == _JUNK
        junk_seen = np.cumsum(is_junk)  # junk so far, over the whole block
        junk_per_row = np.bincount(row[is_junk], minlength=c)
        is_hit = ~is_junk
        hit_row, hit_col = row[is_hit], col[is_hit]
        junk_before = junk_seen[is_hit] - (np.cumsum(junk_per_row) - junk_per_row)[hit_row]
        rank = hit_col + 1 - junk_before  # rank among the kept items
        num_rel = np.bincount(hit_row, minlength=c)  # (c,)
        row_start = np.cumsum(num_rel) - num_rel
        nth = np.arange(1, hit_row.size + 1) - row_start[hit_row]  # the nth match of its row
        precision = nth / rank
        if official:  # trapezoid: mean of the precisions at the previous kept item and here
            before = np.divide(nth - 1, rank - 1, out=np.ones(rank.shape), where=rank > 1)
            precision = (before + precision) / 2
        ok = num_rel > 0
        ap[s:e] = np.bincount(hit_row, weights=precision, minlength=c) / np.maximum(num_rel, 1)
        first_rank[s:e][ok] = rank[row_start[ok]]
        valid[s:e] = ok

    num_valid = int(valid.sum())
    if num_valid == 0:
        junk_rule = ("person id -1 and same-identity, same-camera items are" if official
                     else "same-identity, same-camera items are")
        raise ValueError(f"no query has a match in the gallery once {junk_rule} removed "
                         f"({num_q} queries, {num_g} gallery items, protocol {protocol!r})")
    ranks = np.arange(1, max_rank + 1)
    cmc = (first_rank[valid, None] <= ranks[None, :]).mean(axis=0)  # (max_rank,)
    all_ap = ap[valid]
    return {
        "cmc": cmc,
        "mAP": float(all_ap.mean()),
        "num_valid_queries": num_valid,
        "all_AP": all_ap,
    }
