"""Train STGCN on a small synthetic dataset from Python, through the public training function.

    python examples/train_stgcn.py                     # about 20 s on 2 CPU cores
    python examples/train_stgcn.py --ids 64 --test-ids 32 --epochs 20 --batch-instances 4
    python examples/train_stgcn.py --backbone resnet50 --height 256 --width 128 --threads 0

The run is a :class:`stgraph.config.TrainSettings` (one field per flag of ``stgraph
train``) given to :func:`stgraph.recipe.train`, which does what ``stgraph train`` does: a
SyntheticReID dataset (procedurally drawn pedestrians, no files; its size through
``dataset_kwargs``), STGCN from the model registry, the PK-sampled loader, the ``ReIDLoss``
of the papers (label-smoothed cross-entropy + batch-hard triplet), Adam with warm-up and
cosine decay, the :class:`~stgraph.engine.Trainer`, then the query vs gallery evaluation;
it writes ``OUTPUT/metrics.json`` and ``OUTPUT/checkpoint.pth`` and returns the metrics.
The defaults are tiny so that it runs in CI; the second command above is the scale of the
README's main job (``stgraph train``).
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from stgraph.config import TrainSettings
from stgraph.recipe import train


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
    p.add_argument("--output", help="the run's folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    # Frames are rendered at 128x64 (or the input size if larger) and resized to the input.
    render = [max(128, args.height), max(64, args.width)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(
            model="stgcn", dataset="synthetic",
            dataset_kwargs={"num_train_ids": args.ids, "num_test_ids": args.test_ids,
                            "image_size": render, "seed": args.seed},
            backbone=args.backbone, pretrained=args.pretrained, height=args.height,
            width=args.width, seq_len=args.seq_len, epochs=args.epochs,
            batch_ids=args.batch_ids, batch_instances=args.batch_instances,
            num_patches=args.num_patches, lr=args.lr, seed=args.seed, workers=0,
            no_progress=True, output=args.output or str(Path(tmp) / "run"))
        metrics = train(settings)  # prints the dataset, one line per epoch, the metrics
        chance = 1 / args.test_ids  # one gallery tracklet per test identity and camera
        print(f"evaluation: {metrics['num_query']} queries vs {metrics['num_gallery']} "
              f"gallery tracklets (chance rank-1 {chance:.3f})")
        print(f"rank-1 {metrics['rank1']:.4f}  rank-5 {metrics['rank5']:.4f}  "
              f"mAP {metrics['mAP']:.4f}")
        if args.save:  # the checkpoint stgraph evaluate / plot read
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(settings.output) / "checkpoint.pth", args.save)
            print(f"wrote {args.save}")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return metrics


if __name__ == "__main__":
    main()
