"""Evaluation speed at MARS size: distances, CMC + mAP under both protocols, re-ranking.

Sizes are MARS's (Zheng et al., ECCV 2016): 1980 queries against torchreid's gallery of
9330 tracklets (the 12180 test tracklets minus the queries minus the 870 junk ones,
protocol ``"torchreid"``) and against all 12180 test tracklets (protocol
``"mars-official"``). Person ids and cameras are the real ones, read from
``../shared/data/mars-info`` (``tracks_test_info.mat``, ``query_IDX.mat``); synthetic ones
of the same sizes are used when that folder is missing (the JSON says which). Features are
random 2048-d float32 vectors, clustered by identity so that retrieval is neither perfect
nor random.

Measured: the distance matrix (``compute_distance_matrix``), ``evaluate_rank`` per protocol,
a per-query reference loop as common re-ID code writes it (``np.argsort`` per query, then
torchreid's ``eval_market1501`` body, or the Python port of MARS's ``compute_AP.m`` used by
Person_reID_baseline_pytorch) timed on the first ``--ref-queries`` queries and
extrapolated linearly to all of them, the speed-up, whether both give the same results on
those queries, and ``re_ranking`` (k1=20, k2=6, lambda=0.3) on the torchreid split with
its peak memory. The reference loops sort with ``kind="stable"`` (their originals use the
default quicksort): float32 distances have exact ties, and only a stable sort makes the
results comparable.

Usage (from the repository root)::

    python benchmarks/eval_speed.py [--out benchmarks/results/eval_speed.json]
    python benchmarks/eval_speed.py --quick   # small synthetic sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, measure, save_results  # noqa: E402

from stgraph.eval import compute_distance_matrix, evaluate_rank, re_ranking  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARS_INFO = ROOT.parent / "shared" / "data" / "mars-info"
TARGET_SECONDS, TARGET_SPEEDUP = 1.0, 60.0  # issue 4: CMC + mAP under 1 s, 60x the loop


# ----------------------------------------------------------------------------- data


def _shown(path: Path) -> str:
    """``path`` relative to the repository root where possible (no machine paths in results)."""
    try:
        return os.path.relpath(Path(path).resolve(), ROOT)
    except ValueError:
        return str(path)


def load_mars_split(info_dir: Path) -> dict[str, Any]:
    """Real MARS test ids/cameras and the 0-based query rows, from the official .mat files."""
    from scipy.io import loadmat

    info = loadmat(str(info_dir / "tracks_test_info.mat"))["track_test_info"].astype(np.int64)
    query = loadmat(str(info_dir / "query_IDX.mat"))["query_IDX"].ravel().astype(np.int64) - 1
    return {"pids": info[:, 2], "cams": info[:, 3], "query": query, "source": _shown(info_dir)}


def synthetic_split(num_test: int, num_query: int, seed: int) -> dict[str, Any]:
    """MARS-like ids: 7% junk (-1), 27% distractors (0), the rest over num_test / 13 people."""
    rng = np.random.default_rng(seed)
    num_junk, num_zero = round(num_test * 870 / 12180), round(num_test * 3248 / 12180)
    num_people = max(2, (num_test - num_junk - num_zero) // 13)
    pids = np.concatenate([np.full(num_junk, -1), np.zeros(num_zero, dtype=np.int64),
                           rng.integers(1, num_people + 1, num_test - num_junk - num_zero)])
    cams = rng.integers(1, 7, num_test)
    query = np.sort(rng.choice(np.flatnonzero(pids > 0), num_query, replace=False))
    return {"pids": pids, "cams": cams, "query": query, "source": "synthetic"}


def make_features(pids: np.ndarray, dim: int, seed: int) -> torch.Tensor:
    """One random centre per person (each junk/distractor tracklet its own) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    _, person = np.unique(pids, return_inverse=True)
    person = np.where(pids > 0, person, len(pids) + np.arange(len(pids)))  # <= 0: alone
    _, person = np.unique(person, return_inverse=True)
    centres = torch.randn(int(person.max()) + 1, dim, generator=gen)
    return centres[torch.from_numpy(person)] + 3.0 * torch.randn(len(pids), dim, generator=gen)


# ------------------------------------------------------------------- reference loops


def reference_torchreid(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid's ``eval_market1501`` body, one ``np.argsort`` per query (stable)."""
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        matches = (g_pids[order] == q_pids[q]).astype(np.int32)
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        raw_cmc = matches[np.invert(remove)]
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
    return np.asarray(all_cmc, dtype=np.float64).mean(0), np.asarray(all_ap)


def reference_mars_official(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The Python port of MARS's ``compute_AP.m`` (Person_reID_baseline_pytorch), per query."""
    all_cmc, all_ap = [], []
    junk0 = np.flatnonzero(g_pids == -1)
    for q in range(distmat.shape[0]):
        index = np.argsort(distmat[q], kind="stable")
        query_index = np.flatnonzero(g_pids == q_pids[q])
        camera_index = np.flatnonzero(g_camids == q_camids[q])
        good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
        junk_index = np.append(junk0, np.intersect1d(query_index, camera_index))
        good_index = np.setdiff1d(good_index, junk0)  # a query of id -1: junk wins
        if good_index.size == 0:
            continue
        index = index[np.isin(index, junk_index, invert=True)]
        rows_good = np.flatnonzero(np.isin(index, good_index))
        cmc = np.zeros(max(len(index), max_rank))
        cmc[rows_good[0]:] = 1
        ngood, ap = len(good_index), 0.0
        for i in range(ngood):
            precision = (i + 1) / (rows_good[i] + 1)
            old_precision = i / rows_good[i] if rows_good[i] != 0 else 1.0
            ap += (1.0 / ngood) * (old_precision + precision) / 2
        all_cmc.append(cmc[:max_rank])
        all_ap.append(ap)
    return np.asarray(all_cmc).mean(0), np.asarray(all_ap)


REFERENCES = {"torchreid": reference_torchreid, "mars-official": reference_mars_official}


# ------------------------------------------------------------------------ benchmark


def _strip(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "value"}


def run_protocol(protocol: str, qf, gf, q_pids, g_pids, q_cams, g_cams, repeats: int,
                 ref_queries: int) -> dict[str, Any]:
    dist = measure(lambda: compute_distance_matrix(qf, gf), repeats=repeats, warmup=1)
    distmat = dist.pop("value").numpy()
    args = (distmat, q_pids, g_pids, q_cams, g_cams)
    rank = measure(lambda: evaluate_rank(*args, protocol=protocol), repeats=repeats, warmup=1)
    out = rank.pop("value")
    n = min(ref_queries, len(q_pids))
    sub = (distmat[:n], q_pids[:n], g_pids, q_cams[:n], g_cams)
    ref = measure(lambda: REFERENCES[protocol](*sub), repeats=1, warmup=0, memory=False)
    ref_cmc, ref_ap = ref.pop("value")
    vec = evaluate_rank(*sub, protocol=protocol)
    same = {
        "queries": n,
        "num_valid_equal": int(vec["num_valid_queries"]) == len(ref_ap),
        "cmc_max_abs_diff": float(np.abs(vec["cmc"] - ref_cmc).max()),
        "ap_max_abs_diff": float(np.abs(vec["all_AP"] - ref_ap).max()),
    }
    same["identical"] = bool(same["num_valid_equal"] and same["cmc_max_abs_diff"] == 0
                             and same["ap_max_abs_diff"] <= 1e-12)
    ref_full = ref["median_s"] * len(q_pids) / n
    return {
        "num_query": len(q_pids), "num_gallery": len(g_pids),
        "distance": _strip(dist), "rank": _strip(rank),
        "reference_subset": _strip(ref), "reference_full_estimate_s": ref_full,
        "speedup": ref_full / rank["median_s"], "same_results": same,
        "mAP": out["mAP"], "rank1": float(out["cmc"][0]),
        "num_valid_queries": out["num_valid_queries"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/eval_speed.json")
    parser.add_argument("--mars-info", type=Path, default=MARS_INFO)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-rerank", action="store_true", help="skip re-ranking")
    parser.add_argument("--quick", action="store_true",
                        help="synthetic 1500 tracklets / 200 queries, 256-d: a smoke test")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.quick:
        split, dim = synthetic_split(1500, 200, args.seed), 256
    elif (args.mars_info / "tracks_test_info.mat").is_file():
        split, dim = load_mars_split(args.mars_info), args.dim
    else:
        split, dim = synthetic_split(12180, 1980, args.seed), args.dim
    pids, cams, query = split["pids"], split["cams"], split["query"]
    feats = make_features(pids, dim, args.seed)
    is_query = np.zeros(len(pids), dtype=bool)
    is_query[query] = True
    galleries = {
        "torchreid": np.flatnonzero(~is_query & (pids != -1)),  # 9330 on MARS
        "mars-official": np.arange(len(pids)),  # 12180: all test tracklets, queries included
    }
    qf = feats[query]
    results: dict[str, Any] = {
        "ids_source": split["source"], "dim": dim, **machine(), "numpy": np.__version__,
        "protocols": {},
        "target": {"rank_seconds": TARGET_SECONDS, "speedup": TARGET_SPEEDUP},
    }
    for protocol, g in galleries.items():
        results["protocols"][protocol] = run_protocol(
            protocol, qf, feats[g], pids[query], pids[g], cams[query], cams[g],
            args.repeats, args.ref_queries)

    if not args.no_rerank:
        g = galleries["torchreid"]
        rr = measure(lambda: re_ranking(qf, feats[g]), repeats=1, warmup=0)
        reranked = evaluate_rank(rr.pop("value"), pids[query], pids[g], cams[query], cams[g])
        n = len(query) + len(g)
        results["rerank"] = {
            "num_query": len(query), "num_gallery": len(g), "k1": 20, "k2": 6, "lambda": 0.3,
            **_strip(rr), "dist_matrix_mb": n * n * 4 / 2**20,
            "mAP": reranked["mAP"], "rank1": float(reranked["cmc"][0]),
        }

    print_table(results)
    save_results(args.out, results)
    return results


def print_table(res: dict[str, Any]) -> None:
    print(f"evaluation speed, ids/cameras: {res['ids_source']}; {res['dim']}-d features; "
          f"torch threads {res['threads']}; median of repeats")
    head = f"{'step':<44}{'size':>14}{'seconds':>10}{'peak MiB':>10}"
    print(head + "\n" + "-" * len(head))
    for protocol, r in res["protocols"].items():
        size = f"{r['num_query']} x {r['num_gallery']}"
        d, k, ref = r["distance"], r["rank"], r["reference_subset"]
        print(f"{'distance matrix (' + protocol + ')':<44}{size:>14}{d['median_s']:>10.3f}"
              f"{d['rss_delta_mb']:>10.0f}")
        print(f"{'CMC + mAP ' + protocol:<44}{size:>14}{k['median_s']:>10.3f}"
              f"{k['peak_traced_mb']:>10.0f}")
        n = r["same_results"]["queries"]
        sub = f"{n} x {r['num_gallery']}"
        print(f"{f'per-query loop, {n} queries (1 run)':<44}{sub:>14}"
              f"{ref['median_s']:>10.3f}{'':>10}")
        print(f"{'  -> extrapolated to all queries':<44}{size:>14}"
              f"{r['reference_full_estimate_s']:>10.2f}{'':>10}")
        same = r["same_results"]
        print(f"  speed-up {r['speedup']:.0f}x; same results on {n} queries: "
              f"{same['identical']} (AP max diff {same['ap_max_abs_diff']:.1e}); "
              f"mAP {r['mAP']:.4f}, rank-1 {r['rank1']:.4f}, "
              f"{r['num_valid_queries']} valid queries")
    if "rerank" in res:
        r = res["rerank"]
        size = f"{r['num_query']} x {r['num_gallery']}"
        print(f"{'re-ranking k1=20 k2=6 lambda=0.3 (1 run)':<44}{size:>14}"
              f"{r['median_s']:>10.2f}{r['rss_delta_mb']:>10.0f}")
        print(f"  peak RSS {r['peak_rss_mb']:.0f} MiB (rise {r['rss_delta_mb']:.0f} MiB; the "
              f"N x N float32 distance alone is {r['dist_matrix_mb']:.0f} MiB); "
              f"mAP {r['mAP']:.4f}, rank-1 {r['rank1']:.4f} after re-ranking")


if __name__ == "__main__":
    main()
