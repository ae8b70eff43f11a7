"""Time embedding the cuhk03-pair1 test set with the inference API, eager and onnxruntime.

Every query and gallery tracklet of the test split (``splits.json``: 100 identities, a
cam_a and a cam_b tracklet each, about 5 frames per tracklet) is embedded the way
``stgraph evaluate`` does (all frames in consecutive clips, mean pooling):

* ``eager``: :class:`stgraph.inference.FeatureExtractor` with the PyTorch model;
* ``onnxruntime``: the same extractor and data pipeline with the model exported by
  :func:`stgraph.export.export_onnx` and run by onnxruntime's CPU provider
  (:class:`stgraph.export.OnnxEmbedder`).

Both read and resize the frames themselves (that time is included), on ``--threads``
threads (torch's and onnxruntime's intra-op threads). The table gives tracklets, clips,
seconds (median of ``--repeats``), tracklets/s and the largest |onnx - eager| of the
pooled embeddings. The model is a checkpoint's (``--checkpoint``) or a freshly built one
(``--model tp --backbone resnet18 ...``, random weights: speed only). A model that takes
keypoints gets the dataset's ``keypoints.json``.

Usage (from the repository root)::

    python benchmarks/inference.py --model tp --backbone resnet50 --threads 2
    python benchmarks/inference.py --checkpoint runs/cuhk03-ctl/checkpoint.pth
    python benchmarks/inference.py --quick   # synthetic tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, measure, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cuhk03-pair1"


def _model(args) -> tuple[torch.nn.Module, dict]:
    from stgraph.export import load_for_export
    from stgraph.models import create_model

    if args.checkpoint:
        model, cfg = load_for_export(args.checkpoint)
        return model, {"model": cfg["model"], "height": cfg["height"], "width": cfg["width"],
                       "seq_len": cfg["seq_len"], "checkpoint": str(args.checkpoint)}
    kwargs: dict[str, Any] = {"backbone": args.backbone}
    if args.model == "stgcn":
        kwargs.update(seq_len=args.seq_len, num_patches=args.num_patches)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=2, **kwargs).eval()
    return model, {"model": args.model, "backbone": args.backbone, "height": args.height,
                   "width": args.width, "seq_len": args.seq_len, "checkpoint": None}


def _dataset(args, takes_keypoints: bool):
    from stgraph.data import SyntheticReID, create_dataset

    if args.quick:
        return SyntheticReID(num_train_ids=2, num_test_ids=3, min_frames=3, max_frames=9,
                             image_size=(64, 32), seed=1)
    root = Path(args.root)
    if not root.is_dir():
        raise SystemExit(f"inference.py: data folder not found: {root} (pass --root)")
    kp = root / "keypoints.json"
    return create_dataset("prid2011", root=root, split_file=root / "splits.json",
                          keypoints=kp if takes_keypoints and kp.is_file() else None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from stgraph.export import OnnxEmbedder, export_onnx
    from stgraph.inference import FeatureExtractor
    from stgraph.models import list_models
    from stgraph.models.base import takes_keypoints

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a checkpoint of 'stgraph train' (else --model)")
    p.add_argument("--model", default="tp", choices=list_models())
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=8)
    p.add_argument("--num-patches", type=int, default=4, help="STGCN")
    p.add_argument("--root", default=str(DATA), help="cuhk03-pair1 (PRID-2011 layout)")
    p.add_argument("--batch", type=int, default=32, help="clips per forward pass")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="tp, resnet18, 64 x 32, T 4 on 6 synthetic tracklets")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.checkpoint, args.model, args.backbone = None, "tp", "resnet18"
        args.height, args.width, args.seq_len, args.num_patches = 64, 32, 4, 2
    torch.set_num_threads(args.threads)

    model, info = _model(args)
    size = {"seq_len": info["seq_len"], "height": info["height"], "width": info["width"]}
    dataset = _dataset(args, takes_keypoints(model))
    tracklets = list(dataset.query) + list(dataset.gallery)
    eager = FeatureExtractor(model, **size, batch_size=args.batch)
    rows, feats = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", **size)
        runtime = FeatureExtractor(OnnxEmbedder(path, threads=args.threads), **size,
                                   batch_size=args.batch)
        for name, fx in (("eager", eager), ("onnxruntime", runtime)):
            m = measure(lambda fx=fx: fx.embed_dataset(dataset, tracklets),
                        repeats=args.repeats, warmup=args.warmup)
            feats[name] = m.pop("value")
            rows.append({"backend": name, "tracklets": len(tracklets), "clips": fx.num_clips,
                         "seconds": m["median_s"],
                         "tracklets_per_s": len(tracklets) / m["median_s"], "timing": m})
    diff = float((feats["onnxruntime"] - feats["eager"]).abs().max())
    for r in rows:
        r["max_abs_diff"] = diff if r["backend"] == "onnxruntime" else 0.0
    res = {"question": "time to embed the cuhk03-pair1 test set: API eager vs onnxruntime",
           "data": "synthetic (quick)" if args.quick else str(args.root),
           **info, "batch": args.batch, "threads": args.threads, "rows": rows,
           "machine": machine()}
    print(f"{info['model']} {size['height']}x{size['width']} T={size['seq_len']}, "
          f"{args.threads} threads, "
          f"batch {args.batch}, data {res['data']}")
    head = f"{'backend':<12} | {'tracklets':>9} | {'clips':>6} | {'seconds':>8} | " \
           f"{'tracklets/s':>11} | {'max |onnx - eager|':>18}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['backend']:<12} | {r['tracklets']:>9} | {r['clips']:>6} | "
              f"{r['seconds']:>8.2f} | {r['tracklets_per_s']:>11.1f} | "
              f"{r['max_abs_diff']:>18.3g}")
    save_results(Path(args.out), res)
    return res


if __name__ == "__main__":
    main()
