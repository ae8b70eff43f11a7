"""``stgraph extract``, ``stgraph rank`` and ``stgraph export``: use a trained model.

Examples::

    stgraph extract --checkpoint run/checkpoint.pth --split query --out query.npz
    stgraph extract --checkpoint run/checkpoint.pth --frames-dir tracks/ --out tracks.npz
    stgraph rank --query query.npz --gallery gallery.npz --metric cosine --top 10
    stgraph export --checkpoint run/checkpoint.pth --out model.onnx --check

A features file (``.npz``) holds ``features`` (N, D) float32, ``pids`` and ``camids``
(N,) int64 (-1 where unknown, e.g. for ``--frames-dir``), ``names`` (N,) str (the
tracklet's folder, or ``split/index`` for generated data), and ``model``, ``checkpoint``,
``pool`` (0-d str arrays).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

__all__ = ["add_export_parser", "add_extract_parser", "add_rank_parser", "load_features",
           "run_export", "run_extract", "run_rank", "save_features"]


# ------------------------------------------------------------------ features files


def save_features(path: str | os.PathLike, features: torch.Tensor, pids, camids, names,
                  **meta: str) -> Path:
    """Write a features file (see the module docstring); its folder is created.

    Raises:
        ValueError: ``pids`` / ``camids`` / ``names`` not one entry per row.
    """
    feats = features.detach().cpu().to(torch.float32).numpy()
    pids, camids = np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
    names = np.asarray([str(n) for n in names])
    if not len(pids) == len(camids) == len(names) == len(feats):
        raise ValueError(f"save_features: {len(feats)} rows but {len(pids)} pids, "
                         f"{len(camids)} camids, {len(names)} names")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to the name
        np.savez(f, features=feats, pids=pids, camids=camids, names=names,
                 **{k: np.asarray(str(v)) for k, v in meta.items()})
    return path


def load_features(path: str | os.PathLike) -> dict:
    """A features file as a dict: ``features`` (N, D) float32 tensor, ``pids``,
    ``camids`` (N,) int64 arrays, ``names`` (N,) list of str, and its other entries.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a features file (the message names the missing entries).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    missing = [k for k in ("features", "pids", "camids", "names") if k not in data]
    if missing:
        raise ValueError(f"{path} is not a features file of 'stgraph extract': no {missing}")
    feats = data["features"]
    if feats.ndim != 2 or len(feats) != len(data["pids"]):
        raise ValueError(f"{path}: features of shape {feats.shape} for {len(data['pids'])} "
                         "pids; expected (N, D)")
    out = {k: (v.item() if v.ndim == 0 else v) for k, v in data.items()}
    out["features"] = torch.from_numpy(feats)
    out["names"] = [str(n) for n in data["names"]]
    return out


# ------------------------------------------------------------------ extract


def add_extract_parser(subparsers) -> argparse.ArgumentParser:
    """The ``extract`` sub-command: embeddings of a dataset split or of a folder."""
    from stgraph.cli import _add_data_args

    p = subparsers.add_parser(
        "extract", help="embed the tracklets of a dataset split or of a folder (one "
                        "sub-folder per tracklet) with a checkpoint; write a .npz")
    p.add_argument("--checkpoint", required=True)
    _add_data_args(p, required=False)
    p.add_argument("--split", choices=["query", "gallery", "train"], default=None,
                   help="the dataset's tracklets to embed (default query); the dataset is "
                        "the checkpoint's unless --dataset is given")
    p.add_argument("--frames-dir", metavar="DIR",
                   help="embed the tracklets of DIR instead, one sub-folder of frames per "
                        "tracklet (pids and camids -1); --keypoints: a COCO results file "
                        "whose image_id is the frame path relative to DIR")
    p.add_argument("--out", required=True, help="features file (.npz)")
    p.add_argument("--pool", default="mean", choices=["mean", "max"],
                   help="pooling of clip features per tracklet")
    p.add_argument("--test-batch", type=int, default=32, help="clips per batch")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _tracklet_name(split: str, i: int, frames: tuple) -> str:
    first = frames[0]
    if isinstance(first, (str, os.PathLike)):
        return Path(first).parent.as_posix()
    return f"{split}/{i}"


def run_extract(args: argparse.Namespace) -> int:
    """Run ``stgraph extract``; returns the exit status."""
    from stgraph.cli import _bars, _dataset_config, _device, _load_dataset
    from stgraph.inference import FeatureExtractor, list_tracklet_folders

    if args.frames_dir and (args.dataset or args.split):
        raise ValueError("--frames-dir embeds a folder: not with --dataset or --split")
    device = _device(args.device)
    progress = not args.no_progress  # the messages; bars only on a terminal (_bars)
    if args.frames_dir:
        fx = FeatureExtractor.from_checkpoint(args.checkpoint, device, pool=args.pool,
                                              batch_size=args.test_batch,
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
                                              batch_size=args.test_batch)
        dataset = _load_dataset(_dataset_config(args, base=fx.config.get("dataset")))
        split = args.split or "query"
        tracklets = getattr(dataset, split)
        if progress:
            print(f"embedding the {len(tracklets)} {split} tracklets of {dataset.name}")
        feats = fx.embed_dataset(dataset, tracklets, workers=args.workers,
                                 progress=_bars(args))
        names = [_tracklet_name(split, i, t.frames) for i, t in enumerate(tracklets)]
        pids = [t.pid for t in tracklets]
        camids = [t.camid for t in tracklets]
    out = save_features(args.out, feats, pids, camids, names,
                        model=fx.config.get("model", ""), checkpoint=str(args.checkpoint),
                        pool=args.pool)
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
    and mAP under the torchreid protocol (:func:`stgraph.engine.rank_features`: the
    gallery tracklets of the query's pid *and* camera are left out of its ranking).
    """
    from stgraph.cli import format_table
    from stgraph.engine import rank_features
    from stgraph.eval import compute_distance_matrix

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
    size = {"height": cfg["height"], "width": cfg["width"], "seq_len": cfg["seq_len"]}
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
