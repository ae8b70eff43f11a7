"""Which branch of a trained model carries its retrieval: every branch evaluated on its own.

STGCN's embedding concatenates three branches (global, temporal graph, spatial graph),
CTL's is V_f^a but it trains V_f^g and V_f^c beside it. Under the frozen protocol a branch
with no trainable layer before its BNNeck (STGCN's and CTL's global branch, TP) ranks with
the ImageNet features as they are. This script evaluates, from the feature cache, each
branch's post-BNNeck feature alone and the model's embedding, per checkpoint, with
euclidean and cosine distance, and averages over the checkpoints given (e.g. the seeds of
``benchmarks/accuracy.py``). It also gives, per branch as wide as the global one, the mean
cosine of its feature with the global feature before the BNNecks (CTL's V_f^a is
TAP(parts + V_g): near 1 when the parts add little to V_g). For a model whose embedding is
one of its branches (CTL), the concatenation of all its post-BNNeck branch features is
ranked as well (``all-branches``, what STGCN's embedding is).

Without ``--cache`` the checkpoints are evaluated from the frames of the dataset they were
trained on (fine-tuned models, ``benchmarks/accuracy.py --protocol finetune``), at their
size and clip length; the cosine with the global branch is then left out.

Usage (from the repository root)::

    python benchmarks/branches.py --cache CACHE runs/accuracy/frozen/stgcn/seed*/checkpoint.pth
    python benchmarks/branches.py runs/accuracy/finetune/stgcn/seed0/checkpoint.pth
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, save_results  # noqa: E402

from stgraph.cache import CachedTestClips, FeatureCache, FeatureMapHead  # noqa: E402
from stgraph.checkpoint import load_checkpoint  # noqa: E402
from stgraph.config import load_dataset  # noqa: E402
from stgraph.data.clips import TestClipDataset  # noqa: E402
from stgraph.eval import rank_features  # noqa: E402
from stgraph.eval.features import extract_features  # noqa: E402
from stgraph.models.base import takes_keypoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def branch_features(head: FeatureMapHead, cache: FeatureCache, tracklets, seq_len: int,
                    batch_size: int = 32, global_cosine: dict | None = None,
                    without_global: bool = False) -> dict[str, torch.Tensor]:
    """Per-tracklet mean of each branch's post-BNNeck clip feature, and of the embedding;
    with ``without_global`` also ``"without-global"``, the other branches' features
    concatenated (an ablation at test time: the embedding without the global branch).

    With a dict ``global_cosine``, it receives, per branch of the width of the ``global``
    branch, the mean over clips of the cosine between that branch's feature and the global
    one, both before their BNNecks: how much of the branch is the (frozen) global feature.
    """
    keypoints = "keypoints" in head.input_keys
    clips = CachedTestClips(cache, tracklets, seq_len, keypoints=keypoints)
    head.eval()
    sums: dict[str, torch.Tensor] = {}
    cos_sums: dict[str, float] = {}
    for batch in DataLoader(clips, batch_size=batch_size):
        extra = {"keypoints": batch["keypoints"]} if keypoints else {}
        out = head(batch["clip"], **extra)
        raw = dict(zip(out["branches"], out["features"], strict=True))
        if global_cosine is not None and "global" in raw:
            for name, f in raw.items():
                if f.shape == raw["global"].shape:
                    cos = F.cosine_similarity(f, raw["global"], dim=1).sum().item()
                    cos_sums[name] = cos_sums.get(name, 0.0) + cos
        feats = _post_bnneck(raw, out["embedding"], head.model.necks)
        for name, f in feats.items():
            if name not in sums:
                sums[name] = f.new_zeros(clips.num_tracklets, f.size(1))
            sums[name].index_add_(0, batch["tracklet"], f)
    if global_cosine is not None:
        global_cosine.update({k: v / len(clips) for k, v in cos_sums.items()})
    counts = clips.clip_tracklet.bincount(minlength=clips.num_tracklets).unsqueeze(1)
    return _with_combinations({name: s / counts for name, s in sums.items()}, without_global)


def _post_bnneck(raw: dict[str, torch.Tensor], embedding: torch.Tensor,
                 necks) -> dict[str, torch.Tensor]:
    """Each branch's feature after its BNNeck (``necks`` in branch order), and the model's
    ``"embedding"``."""
    feats = {name: neck(f)[0] for (name, f), neck in zip(raw.items(), necks, strict=True)}
    feats["embedding"] = embedding
    return feats


def _with_combinations(out: dict[str, torch.Tensor],
                       without_global: bool) -> dict[str, torch.Tensor]:
    """``out`` plus ``"without-global"`` (with ``without_global``: the other branches
    concatenated, the embedding an STGCN without its global branch would rank) and, for a
    model that ranks one of its branches (CTL: V_f^a), ``"all-branches"``."""
    if without_global:
        rest = [f for name, f in out.items() if name not in ("global", "embedding")]
        if "global" in out and rest:
            out["without-global"] = torch.cat(rest, dim=1)
    branches = [f for name, f in out.items() if name not in ("embedding", "without-global")]
    if sum(f.size(1) for f in branches) != out["embedding"].size(1):
        out["all-branches"] = torch.cat(branches, dim=1)
    return out


class _AllBranches(torch.nn.Module):
    """``model`` whose ``"embedding"`` is every branch's post-BNNeck feature and the
    model's own embedding side by side (``widths`` names the columns after the first
    batch), so that one pass of :func:`~stgraph.eval.features.extract_features` pools them
    all per tracklet (a mean, so each column block is that feature's tracklet mean)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.input_keys = tuple(getattr(model, "input_keys", ()))
        self.widths: dict[str, int] = {}
        self.train(model.training)  # extract_features restores this mode on the model

    def forward(self, clip, **extra):
        out = self.model(clip, **extra)
        raw = dict(zip(out["branches"], out["features"], strict=True))
        feats = _post_bnneck(raw, out["embedding"], self.model.necks)
        self.widths = {name: f.size(1) for name, f in feats.items()}
        return {"embedding": torch.cat(list(feats.values()), dim=1)}


@torch.no_grad()
def frame_branch_features(model, dataset, tracklets, seq_len: int, height: int, width: int,
                          batch_size: int = 32,
                          without_global: bool = False) -> dict[str, torch.Tensor]:
    """:func:`branch_features` from the frames (every frame, consecutive clips, as
    :func:`stgraph.eval.evaluate`), for a model trained end to end."""
    clips = TestClipDataset(dataset, tracklets, seq_len, height, width,
                            keypoints=takes_keypoints(model))
    wrapped = _AllBranches(model)
    feats = extract_features(wrapped, DataLoader(clips, batch_size=batch_size),
                             clips.num_tracklets)
    out = dict(zip(wrapped.widths, feats.split(list(wrapped.widths.values()), dim=1),
                   strict=True))
    return _with_combinations(out, without_global)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--cache", help="the cache the runs trained from (default: evaluate "
                   "from the frames of the checkpoint's dataset)")
    p.add_argument("--without-global", action="store_true",
                   help="also rank the branches but the global one, concatenated")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "branches.json"))
    args = p.parse_args(argv)
    cache = FeatureCache(args.cache) if args.cache else None
    per_ckpt = []
    for path in args.checkpoints:
        model, cfg = load_checkpoint(path)
        cos: dict[str, float] = {}
        if cache is not None:
            head = FeatureMapHead(model, cache.image_size, cache.cut)
            q = branch_features(head, cache, cache.query, cfg["seq_len"], global_cosine=cos,
                                without_global=args.without_global)
            g = branch_features(head, cache, cache.gallery, cfg["seq_len"],
                                without_global=args.without_global)
            data = cache
        else:
            data = load_dataset(cfg["dataset"])
            size = (cfg["seq_len"], cfg["height"], cfg["width"])
            q, g = (frame_branch_features(model, data, tracklets, *size,
                                          without_global=args.without_global)
                    for tracklets in (data.query, data.gallery))
        row = {"checkpoint": str(path), "model": cfg["model"], "global_cosine": cos}
        for name in q:
            for metric in ("euclidean", "cosine"):
                m = rank_features(q[name], g[name], data.query, data.gallery, metric=metric)
                row[f"{name}/{metric}"] = {"rank1": 100 * m["rank1"], "mAP": 100 * m["mAP"]}
        per_ckpt.append(row)
    keys = [k for k in per_ckpt[0] if "/" in k]
    summary = {k: {s: statistics.fmean(r[k][s] for r in per_ckpt) for s in ("rank1", "mAP")}
               for k in keys}
    print(f"{len(per_ckpt)} checkpoint(s) of {per_ckpt[0]['model']}, mean rank-1 / mAP (%):")
    print(f"  {'feature':<14} | {'euclidean':>15} | {'cosine':>15}")
    for name in dict.fromkeys(k.split("/")[0] for k in keys):
        e, c = summary[f"{name}/euclidean"], summary[f"{name}/cosine"]
        print(f"  {name:<14} | {e['rank1']:6.1f} / {e['mAP']:5.1f} | "
              f"{c['rank1']:6.1f} / {c['mAP']:5.1f}")
    cos_names = per_ckpt[0]["global_cosine"]
    if cos_names:
        mean_cos = {k: statistics.fmean(r["global_cosine"][k] for r in per_ckpt)
                    for k in cos_names}
        summary["global_cosine"] = mean_cos
        print("  cosine with the global branch before the BNNecks (query clips): "
              + ", ".join(f"{k} {v:.3f}" for k, v in mean_cos.items()))
    results = {"machine": machine(), "summary": summary, "checkpoints": per_ckpt}
    save_results(Path(args.out), results)
    return results


if __name__ == "__main__":
    main()
