"""Train STGCN on a small synthetic dataset with stgraph's engine functions (not the CLI).

    python examples/train_stgcn.py                     # about 20 s on 2 CPU cores
    python examples/train_stgcn.py --ids 64 --test-ids 32 --epochs 20 --batch-instances 4
    python examples/train_stgcn.py --backbone resnet50 --height 256 --width 128 --threads 0

Builds a SyntheticReID dataset (procedurally drawn pedestrians, no files), creates STGCN
from the model registry, trains it with ``make_train_loader`` / ``Trainer`` /
``build_optimizer`` / ``warmup_cosine`` and the ``ReIDLoss`` of the papers (label-smoothed
cross-entropy + batch-hard triplet), then evaluates query vs gallery with ``evaluate`` and
prints rank-1 / rank-5 / mAP. The defaults are tiny so that it runs in CI; the second
command above is the scale of the README's main job (``stgraph train``).
"""

import argparse
import time

import torch

from stgraph.checkpoint import save_checkpoint
from stgraph.data import SyntheticReID
from stgraph.engine import (
    Trainer,
    build_optimizer,
    evaluate,
    make_train_loader,
    takes_keypoints,
    warmup_cosine,
)
from stgraph.losses import ReIDLoss
from stgraph.models import create_model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18",
                   choices=["resnet18", "resnet34", "resnet50"])
    p.add_argument("--pretrained", help="local torchvision ImageNet weights (.pth)")
    p.add_argument("--height", type=int, default=64, help="input height in pixels")
    p.add_argument("--width", type=int, default=32, help="input width in pixels")
    p.add_argument("--seq-len", type=int, default=4, help="frames per clip T")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ids", type=int, default=16, help="training identities")
    p.add_argument("--test-ids", type=int, default=8, help="test identities")
    p.add_argument("--batch-ids", type=int, default=8, help="identities per batch P")
    p.add_argument("--batch-instances", type=int, default=2, help="tracklets per identity K")
    p.add_argument("--num-patches", type=int, default=4, help="horizontal patches per frame")
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1, fastest for tiny inputs on a shared machine; "
                        "0: torch's default, all cores)")
    p.add_argument("--save", help="write a checkpoint (.pth) that stgraph evaluate / plot and "
                                  "examples/plot_learned_topology.py --checkpoint read")
    return p.parse_args(argv)


def write_checkpoint(args, model, dataset, metrics) -> None:
    """A checkpoint in the format of ``stgraph train``, so the CLI's tools can read it."""
    kwargs = {"backbone": args.backbone, "seq_len": args.seq_len,
              "num_patches": args.num_patches}
    config = {"model": "stgcn", "model_kwargs": kwargs, "num_classes": dataset.num_train_pids,
              "dataset": {"name": "synthetic", "num_train_ids": args.ids,
                          "num_test_ids": args.test_ids, "image_size": list(dataset.image_size),
                          "seed": args.seed},
              "seq_len": args.seq_len, "height": args.height, "width": args.width}
    print(f"wrote {save_checkpoint(args.save, model, config, metrics)}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    # Frames are rendered at 128x64 (or the input size if larger) and resized to the input.
    render = (max(128, args.height), max(64, args.width))
    dataset = SyntheticReID(num_train_ids=args.ids, num_test_ids=args.test_ids,
                            image_size=render, seed=args.seed)
    print(dataset.summary())

    model = create_model("stgcn", num_classes=dataset.num_train_pids, backbone=args.backbone,
                         pretrained=args.pretrained, seq_len=args.seq_len,
                         num_patches=args.num_patches)
    params = sum(p.numel() for p in model.parameters())
    print(f"STGCN ({args.backbone}, {args.num_patches} patches x {args.seq_len} frames): "
          f"{params / 1e6:.2f} M parameters")

    loader = make_train_loader(dataset, args.seq_len, args.height, args.width, args.batch_ids,
                               args.batch_instances, seed=args.seed,
                               keypoints=takes_keypoints(model))  # False for STGCN
    criterion = ReIDLoss(dataset.num_train_pids)
    optimizer = build_optimizer(model, args.lr)
    scheduler = warmup_cosine(optimizer, total_steps=args.epochs * len(loader),
                              warmup_steps=len(loader))  # one epoch of warm-up
    print(f"training: {len(loader)} batches of {args.batch_ids} x {args.batch_instances} clips "
          f"of {args.seq_len} x 3 x {args.height} x {args.width} per epoch")
    # Trainer: the loop of stgraph train (one plain line per epoch; with output=FOLDER and
    # config=... it also writes last.pth / log.jsonl every epoch and can resume)
    Trainer(model, loader, criterion, optimizer, scheduler, epochs=args.epochs).fit()

    metrics = evaluate(model, dataset, args.seq_len, args.height, args.width, progress=False)
    chance = 1 / len({t.pid for t in dataset.gallery})
    print(f"evaluation: {metrics['num_query']} queries vs {metrics['num_gallery']} gallery "
          f"tracklets (chance rank-1 {chance:.3f})")
    print(f"rank-1 {metrics['rank1']:.4f}  rank-5 {metrics['rank5']:.4f}  "
          f"mAP {metrics['mAP']:.4f}")
    if args.save:
        write_checkpoint(args, model, dataset, metrics)
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return metrics


if __name__ == "__main__":
    main()
