"""The cached protocols' costs: building the feature-map cache and training from it.

Targets on the 2-core CPU, cuhk03-pair1 at 256 x 128 (EfficientNet-Lite0, ImageNet weights,
last stride 1, every frame and its mirror image): issue 20's partial protocol (``--cut``
default: the head conv's input, 320 x 16 x 8 maps; the tail trains with the head): the
cache built in at most 15 minutes and at most 2 GB on disk, one STGCN epoch in at most
60 s and one TP epoch in at most 30 s; issue 11's frozen one (``--cut end``): one STGCN
head epoch in at most 30 s; both: the training process's resident memory bounded (the
cache is read, not loaded whole).

Measured:
* the build (``stgraph.cache.build_feature_cache``): seconds, frames, size on disk, and the
  process's peak resident set; with ``--cache DIR`` an existing cache is timed from its
  manifest instead of built again (the JSON says which);
* per model: one training epoch of its head from the cache (PK batches of
  ``--batch-ids`` x ``--batch-instances`` clips of ``--seq-len`` frames, the CLI's loop),
  its seconds, the peak resident set during the epoch (``VmHWM`` reset before it) and how
  much of the cache the epoch read.

Usage (from the repository root)::

    python benchmarks/cache.py --cache /work/cache/cuhk03-lite0-256 --models tp stgcn ctl
    python benchmarks/cache.py --out-cache /tmp/cuhk03-cache     # build it, then train
    python benchmarks/cache.py --quick   # synthetic data, tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import _reset_peak_rss, _status_kb, machine, save_results  # noqa: E402

from stgraph.cache import (  # noqa: E402
    FeatureCache,
    FeatureMapHead,
    build_feature_cache,
    cache_settings,
    make_cached_train_loader,
)
from stgraph.data import create_dataset  # noqa: E402
from stgraph.engine import build_optimizer, train_one_epoch  # noqa: E402
from stgraph.losses import ReIDLoss  # noqa: E402
from stgraph.models import create_model  # noqa: E402
from stgraph.models.backbones import build_backbone  # noqa: E402
from stgraph.models.base import takes_keypoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUHK03 = ROOT.parent / "shared" / "data" / "cuhk03-pair1"


def _dataset_config(args) -> dict:
    if args.quick:
        return {"name": "synthetic"}
    root = Path(args.root)
    cfg = {"name": "prid2011", "root": str(root), "split_file": str(root / "splits.json"),
           "split_id": 0}
    if (root / "keypoints.json").is_file():
        cfg["keypoints"] = str(root / "keypoints.json")
    return cfg


def _peak_rss_mb() -> float:
    """The process's peak resident set since the last ``_reset_peak_rss`` (VmHWM), MiB."""
    return (_status_kb("VmHWM") or 0) / 1024


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(CUHK03), help="PRID-2011-layout dataset root")
    p.add_argument("--cache", help="an existing cache folder to time the heads on")
    p.add_argument("--out-cache", help="where to build the cache (default: a temp folder)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--models", nargs="+", default=["tp", "stgcn"])
    p.add_argument("--seq-len", type=int, default=4)
    p.add_argument("--batch-ids", type=int, default=16)
    p.add_argument("--batch-instances", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cut", default=None,
                   help="where the maps are taken (default: an existing --cache's cut, else "
                        "the backbone's default cut, the partial protocol; 'end': frozen)")
    p.add_argument("--quick", action="store_true", help="synthetic data, 64 x 32, a smoke test")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cache.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.height, args.width, args.batch_ids = 64, 32, 8
        if args.out == p.get_default("out"):
            args.out = str(Path(tempfile.gettempdir()) / "stgraph-bench-cache.json")
    data_cfg = _dataset_config(args)
    cut = args.cut
    if cut is None:
        cut = (FeatureCache(args.cache).cut if args.cache else
               build_backbone(args.backbone).default_cut)
    settings = cache_settings(data_cfg, args.backbone, "imagenet", 1, args.height, args.width,
                              cut)

    results = {"machine": machine(), "settings": settings, "build": None, "epochs": []}
    tmp = None
    if args.cache:
        cache = FeatureCache(args.cache)
        cache.check(settings)
        results["build"] = {"seconds": cache.seconds, "measured": "manifest of an earlier build"}
    else:
        dataset = create_dataset(data_cfg["name"], **{k: v for k, v in data_cfg.items()
                                                      if k != "name"})
        out = args.out_cache
        if out is None:
            tmp = tempfile.TemporaryDirectory()
            out = tmp.name
        backbone = build_backbone(args.backbone, last_stride=1, pretrained="imagenet")
        _reset_peak_rss()
        t0 = time.perf_counter()
        cache = build_feature_cache(dataset, backbone, out, settings, progress=False,
                                    overwrite=True)
        results["build"] = {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
                            "measured": "this run"}
    size = os.path.getsize(Path(cache.root) / "maps.npy")
    results["build"].update(frames=cache.shape[1], maps_gib=size / 2**30,
                            map_shape=list(cache.shape[2:]))

    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=cache.num_train_pids, backbone=args.backbone,
                             seq_len=args.seq_len) if name == "stgcn" else create_model(
            name, num_classes=cache.num_train_pids, backbone=args.backbone)
        head = FeatureMapHead(model, cache.image_size, cache.cut)
        loader = make_cached_train_loader(cache, args.seq_len, args.batch_ids,
                                          args.batch_instances, workers=args.workers,
                                          keypoints=takes_keypoints(model))
        criterion = ReIDLoss(cache.num_train_pids)
        optimizer = build_optimizer(head, 3.5e-4)
        _reset_peak_rss()
        t0 = time.perf_counter()
        train_one_epoch(head, loader, criterion, optimizer, 0, progress=False)
        seconds = time.perf_counter() - t0
        clips = len(loader) * args.batch_ids * args.batch_instances
        read = clips * args.seq_len * size / (2 * cache.shape[1])
        results["epochs"].append({
            "model": name, "seconds": seconds, "batches": len(loader), "clips": clips,
            "peak_rss_mb": _peak_rss_mb(), "read_gib": read / 2**30,
            "trained_parameters": sum(p.numel() for p in head.parameters() if p.requires_grad),
        })

    b = results["build"]
    print(f"cache at cut {cut!r}: {b['frames']} frames x 2 flips, maps "
          f"{tuple(b['map_shape'])} float16, "
          f"{b['maps_gib']:.2f} GiB; built in {b['seconds']:.0f} s ({b['measured']})"
          + (f", peak RSS {b['peak_rss_mb']:.0f} MiB" if "peak_rss_mb" in b else ""))
    print(f"{'model':<8} | {'s/epoch':>8} | {'batches':>7} | {'read GiB':>8} | "
          f"{'peak RSS MiB':>12} | {'trained params':>14}")
    print("-" * 70)
    for e in results["epochs"]:
        print(f"{e['model']:<8} | {e['seconds']:8.1f} | {e['batches']:7d} | "
              f"{e['read_gib']:8.2f} | {e['peak_rss_mb']:12.0f} | {e['trained_parameters']:14,d}")
    save_results(Path(args.out), results)
    if tmp is not None:
        tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
