"""What a test tracklet's last clip does to the ranking: trained checkpoints re-ranked three ways.

stgraph embeds every frame of a test tracklet in consecutive clips of ``seq_len`` frames
and averages the clip embeddings. Where ``seq_len`` does not divide the tracklet's length
the last clip is either the tracklet's last ``seq_len`` frames (``last_clip="overlap"``,
the default since issue 20) or its remaining frames padded by repeating the last one
(``"pad"``, torchreid's dense sampling). cuhk03-pair1's test tracklets have about 5
frames, so at ``seq_len`` 4 padding makes a 5-frame tracklet's clips ``[0, 1, 2, 3]`` and
``[4, 4, 4, 4]``: its last frame is half of the feature. This script ranks each
checkpoint (from the frames of the dataset it was trained on, at its size and clip
length) with

* ``pad``: the padded clips, each clip weighted 1 (stgraph before issue 20);
* ``pad, frame-weighted``: the same clips, each weighted by the number of distinct frames
  it holds (for a model that averages frames, e.g. TP, the plain mean of all frames when
  the padded clip holds one frame, as a 5-frame tracklet's at ``seq_len`` 4);
* ``overlap``: the default;

with cosine and euclidean distance, and writes the figures to a JSON file.

Usage (from the repository root)::

    python benchmarks/last_clip.py runs/accuracy/finetune/tp/seed0/checkpoint.pth \\
        runs/accuracy/finetune/stgcn/seed0/checkpoint.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, save_results  # noqa: E402

from stgraph.checkpoint import load_checkpoint  # noqa: E402
from stgraph.config import load_dataset  # noqa: E402
from stgraph.data.clips import TestClipDataset  # noqa: E402
from stgraph.data.sampling import test_clip_indices  # noqa: E402
from stgraph.eval import rank_features  # noqa: E402
from stgraph.models.base import takes_keypoints, to_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The ways a tracklet's clips are cut and averaged: (label, last_clip, frame-weighted).
WAYS = (("pad", "pad", False), ("pad, frame-weighted", "pad", True),
        ("overlap", "overlap", False))


@torch.no_grad()
def tracklet_features(model, dataset, tracklets, seq_len: int, height: int, width: int,
                      last_clip: str, weighted: bool, batch_size: int = 32) -> torch.Tensor:
    """``(len(tracklets), D)``: each tracklet's clip embeddings averaged, every clip weighted
    1, or with ``weighted`` by the number of distinct frames it holds."""
    keypoints = takes_keypoints(model)
    clips = TestClipDataset(dataset, tracklets, seq_len, height, width, keypoints=keypoints,
                            last_clip=last_clip)
    weights = torch.cat([
        torch.tensor([float(len(set(row))) if weighted else 1.0 for row in
                      test_clip_indices(len(t.frames), seq_len, last_clip).tolist()])
        for t in tracklets])  # (num_clips,), in the dataset's clip order
    feats, start = None, 0
    model.eval()
    for batch in DataLoader(clips, batch_size=batch_size):
        extra = {"keypoints": to_model(batch["keypoints"], model, "cpu")} if keypoints else {}
        emb = model(to_model(batch["clip"], model, "cpu"), **extra)["embedding"].double()
        w = weights[start:start + len(emb)].double()
        start += len(emb)
        if feats is None:
            feats = emb.new_zeros(len(tracklets), emb.size(1))
            total = emb.new_zeros(len(tracklets))
        feats.index_add_(0, batch["tracklet"], emb * w[:, None])
        total.index_add_(0, batch["tracklet"], w)
    return (feats / total[:, None]).float()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "last_clip.json"))
    args = p.parse_args(argv)
    rows = []
    for path in args.checkpoints:
        model, cfg = load_checkpoint(path)
        data = load_dataset(cfg["dataset"])
        size = (cfg["seq_len"], cfg["height"], cfg["width"])
        row = {"checkpoint": str(path), "model": cfg["model"], "seq_len": cfg["seq_len"]}
        for label, last_clip, weighted in WAYS:
            q, g = (tracklet_features(model, data, ts, *size, last_clip, weighted)
                    for ts in (data.query, data.gallery))
            for metric in ("cosine", "euclidean"):
                m = rank_features(q, g, data.query, data.gallery, metric=metric)
                row[f"{label}/{metric}"] = {"rank1": 100 * m["rank1"], "mAP": 100 * m["mAP"]}
        rows.append(row)
        print(f"{path} ({cfg['model']}), rank-1 / mAP (%):")
        for label, _, _ in WAYS:
            c, e = row[f"{label}/cosine"], row[f"{label}/euclidean"]
            print(f"  {label:<20} cosine {c['rank1']:5.1f} / {c['mAP']:5.1f}   "
                  f"euclidean {e['rank1']:5.1f} / {e['mAP']:5.1f}", flush=True)
    results = {"machine": machine(), "rows": rows}
    save_results(Path(args.out), results)
    return results


if __name__ == "__main__":
    main()
