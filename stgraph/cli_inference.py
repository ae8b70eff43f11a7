"""``stgraph extract``, ``stgraph rank`` and ``stgraph export``: use a trained model.

Examples::

    stgraph extract --checkpoint run/checkpoint.pth --split query --out query.npz
    stgraph extract --checkpoint run/checkpoint.pth --frames-dir tracks/ --out tracks.npz
    stgraph rank --query query.npz --gallery gallery.npz --metric cosine --top 10
    stgraph export --checkpoint run/checkpoint.pth --out model.onnx --check

A features file (``.npz``) is :func:`stgraph.inference.save_features`'s (read it with
:func:`stgraph.inference.load_features`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import torch

from stgraph.cli_args import HelpFormatter, add_data_args, add_embedding_args, progress_bars
from stgraph.config import clip_size, dataset_config, load_dataset, resolve_device
from stgraph.inference import load_features, save_features

__all__ = ["add_export_parser", "add_extract_parser", "add_rank_parser", "load_features",
           "run_export", "run_extract", "run_rank", "save_features"]


# ------------------------------------------------------------------ extract


def add_extract_parser(subparsers) -> argparse.ArgumentParser:
    """The ``extract`` sub-command: embeddings of a dataset split or of a folder."""
    p = subparsers.add_parser(
        "extract", formatter_class=HelpFormatter,
        help="embed the tracklets of a dataset split or of a folder (one sub-folder per "
             "tracklet) with a checkpoint; write a .npz")
    p.add_argument("--checkpoint", required=True)
    add_data_args(p, required=False)
    p.add_argument("--split", choices=["query", "gallery", "train"], default=None,
                   help="the dataset's tracklets to embed (default query); the dataset is "
                        "the checkpoint's unless --dataset is given")
    p.add_argument("--frames-dir", metavar="DIR",
                   help="embed the tracklets of DIR instead, one sub-folder of frames per "
                        "tracklet (pids and camids -1); --keypoints: a COCO results file "
                        "whose image_id is the frame path relative to DIR")
    p.add_argument("--out", required=True, help="features file (.npz)")
    add_embedding_args(p)  # as stgraph evaluate: the same checks and defaults
    return p


def _tracklet_name(split: str, i: int, frames: tuple) -> str:
    first = frames[0]
    if isinstance(first, (str, os.PathLike)):
        return Path(first).parent.as_posix()
    return f"{split}/{i}"


def run_extract(args: argparse.Namespace) -> int:
    """Run ``stgraph extract``; returns the exit status."""
    from stgraph.inference import FeatureExtractor, list_tracklet_folders

    if args.frames_dir and (args.dataset or args.split):
        raise ValueError("--frames-dir embeds a folder: not with --dataset or --split")
    device = resolve_device(args.device)
    progress = not args.no_progress  # the messages; bars only on a terminal
    if args.frames_dir:
        fx = FeatureExtractor.from_checkpoint(args.checkpoint, device, pool=args.pool,
                                              last_clip=args.last_clip,
                                              batch_size=args.test_batch,
                                              feature=args.eval_feature,
                                              keypoints_file=args.keypoints,
                                              keypoints_root=args.frames_dir)
        tracks = list_tracklet_folders(args.frames_dir)
        if progress:
            print(f"embedding {len(tracks)} tracklets of {args.frames_dir}")
        feats = fx.embed_batch([frames for _, frames in tracks])
        names = [name for name, _ in tracks]
        pids = camids = [-1] * len(tracks)
    else:
        fx = FeatureExtractor.from_checkpoint(args.checkpoint, device, pool=args.pool,
                                              last_clip=args.last_clip,
                                              batch_size=args.test_batch,
                                              feature=args.eval_feature)
        dataset = load_dataset(dataset_config(args.dataset, args.root, args.split_file,
                                              args.split_id, args.keypoints,
                                              base=fx.config.get("dataset")))
        split = args.split or "query"
        tracklets = getattr(dataset, split)
        if progress:
            print(f"embedding the {len(tracklets)} {split} tracklets of {dataset.name}")
        feats = fx.embed_dataset(dataset, tracklets, workers=args.workers,
                                 progress=progress_bars(args))
        names = [_tracklet_name(split, i, t.frames) for i, t in enumerate(tracklets)]
        pids = [t.pid for t in tracklets]
        camids = [t.camid for t in tracklets]
    out = save_features(args.out, feats, pids, camids, names,
                        model=fx.config.get("model", ""), checkpoint=str(args.checkpoint),
                        pool=args.pool, last_clip=args.last_clip)
    print(f"wrote {out}: {feats.shape[0]} tracklets x {feats.shape[1]} dims "
          f"({fx.num_clips} clips)")
    return 0


# ------------------------------------------------------------------ rank


def add_rank_parser(subparsers) -> argparse.ArgumentParser:
    """The ``rank`` sub-command: rank a gallery's features for each query."""
    p = subparsers.add_parser("rank", help="rank gallery features for each query feature "
                                           "(files of 'stgraph extract'); CMC and mAP when "
                                           "the ids are known")
    p.add_argument("--query", required=True, help="query features (.npz)")
    p.add_argument("--gallery", required=True, help="gallery features (.npz)")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"],
                   help="distance between the features (default cosine, as 'stgraph train')")
    p.add_argument("--top", type=int, default=10, help="gallery tracklets listed per query")
    p.add_argument("--max-queries", type=int, default=20,
                   help="queries whose ranking is printed (0: all)")
    return p


def run_rank(args: argparse.Namespace) -> int:
    """Run ``stgraph rank``; returns the exit status.

    Prints each query's ``--top`` nearest gallery tracklets (all of the gallery, same
    camera included); when every pid of both files is known (>= 0), also rank-1/5/10/20
    and mAP under the torchreid protocol (:func:`stgraph.eval.rank_features`: the
    gallery tracklets of the query's pid *and* camera are left out of its ranking).
    """
    from stgraph.eval import compute_distance_matrix, format_table, rank_features

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    q, g = load_features(args.query), load_features(args.gallery)
    qf, gf = q["features"], g["features"]
    for path, feats, names in ((args.query, qf, q["names"]), (args.gallery, gf, g["names"])):
        bad = (~torch.isfinite(feats).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            shown = ", ".join(str(names[i]) for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise ValueError(f"{path}: {len(bad)} of {len(feats)} feature rows hold NaN or "
                             f"infinite values ({shown}); nothing can be ranked by them: "
                             "re-extract the features (a diverged model gives NaN)")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f"query features have {qf.shape[1]} dims and gallery features "
                         f"{gf.shape[1]}: not from the same model")
    dist = compute_distance_matrix(qf, gf, metric=args.metric)
    k = min(args.top, len(gf))
    order = torch.argsort(dist, dim=1, stable=True)[:, :k]
    shown = len(qf) if args.max_queries == 0 else min(args.max_queries, len(qf))
    for i in range(shown):
        pid = int(q["pids"][i])
        head = f"query {i} {q['names'][i]}" + (f" (pid {pid})" if pid >= 0 else "")
        print(head)
        for r, j in enumerate(order[i].tolist(), start=1):
            gp = int(g["pids"][j])
            mark = "" if gp < 0 or pid < 0 else ("  match" if gp == pid else "")
            print(f"  {r:>3}. {g['names'][j]}" + (f" (pid {gp})" if gp >= 0 else "")
                  + f"  d={float(dist[i, j]):.4f}{mark}")
    if shown < len(qf):
        print(f"... {len(qf) - shown} more queries (--max-queries 0 prints all)")
    known = (q["pids"] >= 0).all() and (g["pids"] >= 0).all()
    if known:
        rec = SimpleNamespace
        metrics = rank_features(
            qf, gf, [rec(pid=int(p), camid=int(c)) for p, c in zip(q["pids"], q["camids"],
                                                                   strict=True)],
            [rec(pid=int(p), camid=int(c)) for p, c in zip(g["pids"], g["camids"],
                                                            strict=True)],
            metric=args.metric)
        print(format_table(metrics))
    else:
        print("pids unknown (-1): no CMC / mAP")
    return 0


# ------------------------------------------------------------------ export


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """The ``export`` sub-command: a checkpoint's embedding as an ONNX graph."""
    p = subparsers.add_parser("export", help="export a checkpoint's embedding to ONNX "
                                             "(dynamic batch; optional onnxruntime check)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="ONNX file (.onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--static-batch", action="store_true",
                   help="fix the batch size (2) instead of a dynamic one")
    p.add_argument("--check", action="store_true",
                   help="compare onnxruntime's embeddings with the eager model's on random "
                        "clips (needs onnxruntime)")
    return p


def run_export(args: argparse.Namespace) -> int:
    """Run ``stgraph export``; returns the exit status."""
    from stgraph.export import check_onnx, export_onnx, load_for_export

    model, cfg = load_for_export(args.checkpoint)
    size = clip_size(cfg, args.checkpoint)._asdict()
    out = export_onnx(model, args.out, opset=args.opset, dynamic_batch=not args.static_batch,
                      **size)
    print(f"wrote {out}: {cfg['model']}, clips (B, {size['seq_len']}, 3, {size['height']}, "
          f"{size['width']})" + (", keypoints (B, T, 17, 3)"
                                 if getattr(model, "input_keys", ()) else "")
          + f" -> embedding (B, D), opset {args.opset}")
    if args.check:
        batches = (2,) if args.static_batch else (2, 3)
        worst = check_onnx(model, out, batches=batches, **size)
        print(f"onnxruntime vs eager: max |difference| {worst:.3g} (batches {batches})")
        if not worst < 1e-4:
            raise ValueError(f"the ONNX graph differs from the eager model by {worst:.3g}")
    return 0
