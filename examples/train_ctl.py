"""Train CTL on a small synthetic dataset, its ground-truth keypoints flowing through the loaders.

    python examples/train_ctl.py                       # about 25 s on 2 CPU cores
    python examples/train_ctl.py --ids 64 --test-ids 32 --epochs 20 --batch-instances 4
    python examples/train_ctl.py --backbone resnet50 --height 256 --width 128 --threads 0

CTL (Liu et al., CVPR 2021) pools each frame's feature map into body-part nodes with keypoint
heatmaps. SyntheticReID draws every pedestrian from the 17 COCO keypoints, so it knows them
exactly (``dataset.frame_keypoints``). ``takes_keypoints(model)`` is True for CTL, so
``make_train_loader(..., keypoints=True)`` puts each clip's keypoints, rescaled to the input
size and flipped with the clip, into the batches, and ``Trainer`` / ``evaluate`` pass
them on to ``model(clips, keypoints=...)``. Training uses ``ReIDLoss``: cross-entropy and
triplet losses on CTL's three features plus its diversity loss (eq. 8-9).
"""

import argparse
import time

import torch

from stgraph.checkpoint import save_checkpoint
from stgraph.data import SyntheticReID
from stgraph.engine import Trainer, build_optimizer, make_train_loader, warmup_cosine
from stgraph.eval import evaluate
from stgraph.losses import ReIDLoss
from stgraph.models import create_model
from stgraph.models.base import takes_keypoints


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
    p.add_argument("--num-layers", type=int, default=2, help="3D-GCLs per scale L")
    p.add_argument("--tau", type=int, default=3, help="temporal window of the 3D-GCLs")
    p.add_argument("--alpha", type=float, default=0.3, help="cross-scale weight, eq. 7")
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
    kwargs = {"backbone": args.backbone, "num_layers": args.num_layers,
              "tau": args.tau, "alpha": args.alpha}
    config = {"model": "ctl", "model_kwargs": kwargs, "num_classes": dataset.num_train_pids,
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
    render = (max(128, args.height), max(64, args.width))  # rendered, then resized
    dataset = SyntheticReID(num_train_ids=args.ids, num_test_ids=args.test_ids,
                            image_size=render, seed=args.seed)
    print(dataset.summary())
    key = dataset.train[0].frames[0]
    print(f"ground-truth keypoints of frame {key}: {dataset.frame_keypoints(key).shape} "
          "rows (x, y, score) in the rendered frame's pixels")

    model = create_model("ctl", num_classes=dataset.num_train_pids, backbone=args.backbone,
                         pretrained=args.pretrained, num_layers=args.num_layers, tau=args.tau,
                         alpha=args.alpha)
    params = sum(p.numel() for p in model.parameters())
    print(f"CTL ({args.backbone}, L={args.num_layers}, tau={args.tau}, scales "
          f"{'/'.join(model.skeleton.scales)}): {params / 1e6:.2f} M parameters")

    keypoints = takes_keypoints(model)  # True: CTL.input_keys == ("keypoints",)
    loader = make_train_loader(dataset, args.seq_len, args.height, args.width, args.batch_ids,
                               args.batch_instances, seed=args.seed, keypoints=keypoints)
    first = next(iter(loader))
    print(f"takes_keypoints(model) = {keypoints}; a training batch holds "
          + ", ".join(f"{k} {tuple(v.shape)}" for k, v in first.items()))
    criterion = ReIDLoss(dataset.num_train_pids)  # + diversity loss on part_features
    optimizer = build_optimizer(model, args.lr)
    scheduler = warmup_cosine(optimizer, total_steps=args.epochs * len(loader),
                              warmup_steps=len(loader))
    print(f"training: {len(loader)} batches of {args.batch_ids} x {args.batch_instances} clips "
          "per epoch")
    # Trainer: the loop of stgraph train (one plain line per epoch; with output=FOLDER and
    # config=... it also writes last.pth / log.jsonl every epoch and can resume)
    Trainer(model, loader, criterion, optimizer, scheduler, epochs=args.epochs).fit()

    # evaluate() gives each test clip its keypoints too (TestClipDataset(keypoints=True)).
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
