"""Plot the graphs a CTL or STGCN model learned: adjacency, skeleton, temporal, cross-scale.

    python examples/plot_learned_topology.py           # tiny CTL, about 30 s; PNGs in a tmp dir
    python examples/plot_learned_topology.py --model stgcn --out runs/figures
    python examples/plot_learned_topology.py --checkpoint runs/ctl/checkpoint.pth --out runs/figures

Without ``--checkpoint`` it trains a tiny model for a few steps on the built-in SyntheticReID
dataset (``--epochs``, ``--ids``; raise them for a topology that has learned something); with
``--checkpoint`` it loads a model written by ``stgraph train`` or by
``examples/train_ctl.py --save`` / ``examples/train_stgcn.py --save``. It then runs the model
on one query clip inside ``record_graphs(model)``, which hooks every dense graph layer and
hands back the graph each one built for that clip, and saves PNGs into ``--out``:

* CTL: the 3D-GCL window adjacency of a frame (``plot_adjacency``), the part-to-part edges of
  that frame drawn over the body at its ground-truth keypoints, on the frame
  (``plot_skeleton_graph``, keypoint scale s1 and part scale s2), the strongest edges of a
  window across its frames (``plot_temporal_graph``, scale s3) and the cross-scale attention
  from s1 / s2 to s3 (``plot_cross_scale``);
* STGCN: the clip's affinity graph over its T x P patches (``plot_adjacency``,
  ``plot_temporal_graph``) and the spatial graph of one frame.

``stgraph plot --checkpoint ... --what adjacency|skeleton|temporal|cross-scale|attention`` draws the
same figures from the command line, one at a time.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from stgraph.checkpoint import load_checkpoint
from stgraph.data import SyntheticReID, TestClipDataset, create_dataset
from stgraph.engine import build_optimizer, make_train_loader, train_one_epoch, warmup_cosine
from stgraph.losses import ReIDLoss
from stgraph.models import create_model, record_graphs
from stgraph.models.base import takes_keypoints
from stgraph.viz import (
    clip_to_images,
    plot_adjacency,
    plot_cross_scale,
    plot_skeleton_graph,
    plot_temporal_graph,
)

DEFAULT_OUT = Path(tempfile.gettempdir()) / "stgraph-example-figures"


def train_briefly(args):
    """A tiny model trained for a few steps on SyntheticReID with the engine functions."""
    dataset = SyntheticReID(num_train_ids=args.ids, num_test_ids=2,
                            image_size=(max(128, args.height), max(64, args.width)))
    kwargs = {"seq_len": args.seq_len} if args.model == "stgcn" else {}
    model = create_model(args.model, num_classes=dataset.num_train_pids,
                         backbone=args.backbone, **kwargs)
    loader = make_train_loader(dataset, args.seq_len, args.height, args.width,
                               batch_ids=min(8, args.ids), batch_instances=2,
                               keypoints=takes_keypoints(model))
    criterion = ReIDLoss(dataset.num_train_pids)
    optimizer = build_optimizer(model, 3.5e-4)
    scheduler = warmup_cosine(optimizer, args.epochs * len(loader), 0)
    for epoch in range(args.epochs):
        stats = train_one_epoch(model, loader, criterion, optimizer, epoch,
                                scheduler=scheduler, progress=False)
        print(f"trained {args.model} epoch {epoch + 1}/{args.epochs}: loss {stats['loss']:.3f}")
    return model.eval(), dataset, (args.seq_len, args.height, args.width)


def load(path):
    """A model and its dataset from a checkpoint of ``stgraph train`` or the train examples."""
    model, cfg = load_checkpoint(path)
    data = dict(cfg["dataset"])
    dataset = create_dataset(data.pop("name"), **data)
    print(f"loaded {cfg['model']} from {path}")
    return model, dataset, (cfg["seq_len"], cfg["height"], cfg["width"])


def main(argv=None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ctl", choices=["ctl", "stgcn"],
                   help="model to train (ignored with --checkpoint)")
    p.add_argument("--checkpoint", help="checkpoint.pth of stgraph train (or a train example)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"figure folder ({DEFAULT_OUT})")
    p.add_argument("--backbone", default="resnet18",
                   choices=["resnet18", "resnet34", "resnet50"])
    p.add_argument("--height", type=int, default=128, help="input height in pixels")
    p.add_argument("--width", type=int, default=64, help="input width in pixels")
    p.add_argument("--seq-len", type=int, default=4, help="frames per clip T")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (no checkpoint)")
    p.add_argument("--ids", type=int, default=8, help="training identities (no checkpoint)")
    p.add_argument("--index", type=int, default=0, help="query tracklet to plot")
    p.add_argument("--frame", type=int, default=None, help="frame to plot (default: middle)")
    p.add_argument("--top-k", type=int, default=20, help="edges drawn in the graph plots")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1, fastest for tiny inputs on a shared machine; "
                        "0: torch's default, all cores)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, dataset, (T, H, W) = load(args.checkpoint) if args.checkpoint else train_briefly(args)

    # One query clip (with its keypoints for CTL), through the model while recording graphs.
    kp_input = takes_keypoints(model)
    item = TestClipDataset(dataset, [dataset.query[args.index]], T, H, W, keypoints=kp_input)[0]
    clip = item["clip"][None]  # (1, T, 3, H, W)
    inputs = {"keypoints": item["keypoints"][None]} if kp_input else {}
    with torch.no_grad(), record_graphs(model) as graphs:
        model(clip, **inputs)
    print("recorded graphs: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in graphs.items()))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = T // 2 if args.frame is None else args.frame
    if not 0 <= t < T:
        p.error(f"--frame {t} out of range for clips of {T} frames")
    image = clip_to_images(clip[0])[t]  # the frame, uint8 (H, W, 3)
    written = []

    def save(fig_fn, name, *a, **kw):
        path = out / name
        fig_fn(*a, save=path, **kw)
        written.append(path)
        print(f"wrote {path}")

    if hasattr(model, "gcls"):  # CTL: graphs of windows of tau frames at each scale
        sk = model.skeleton
        for scale in ("s1", "s2", "s3"):
            adj = graphs[f"gcls.{scale}.0"][0, t]  # (tau*N, tau*N), window centred on frame t
            n = sk.num_nodes(scale)
            tau = adj.size(0) // n
            names = sk.part_names(scale)
            centre = slice((tau - 1) // 2 * n, ((tau - 1) // 2 + 1) * n)  # frame t's own block
            offsets = [f"t{k - (tau - 1) // 2:+d}" for k in range(tau)]
            if scale == "s1":
                labels = [f"{o}/{name}" for o in offsets for name in names]
                save(plot_adjacency, "ctl_adjacency_s1.png", adj, node_labels=labels,
                     num_frames=tau, num_parts=n,
                     title=f"3D-GCL gcls.s1.0, window of frame {t}")
            if scale in ("s1", "s2"):
                save(plot_skeleton_graph, f"ctl_skeleton_{scale}.png", item["keypoints"][t],
                     adj[centre, centre], skeleton=sk, image=image, scale=scale,
                     top_k=args.top_k, title=f"gcls.{scale}.0, frame {t}")
            if scale == "s3":
                save(plot_temporal_graph, "ctl_temporal_s3.png", adj, tau, n, top_k=args.top_k,
                     part_labels=names, frame_labels=offsets,
                     title=f"gcls.s3.0, window of frame {t}")
        for fine in model.cs_gcls:  # "s1", "s2" -> "s3"
            att = graphs[f"cs_gcls.{fine}"][0, t]  # (N_s3, N_fine), rows sum to 1
            save(plot_cross_scale, f"ctl_cross_scale_{fine}.png", att,
                 fine_labels=sk.part_names(fine), coarse_labels=sk.part_names(sk.scales[-1]),
                 title=f"cs_gcls.{fine}: {fine} -> {sk.scales[-1]}, frame {t}")
    else:  # STGCN: one graph over the clip's T x P patches, one per frame over its P patches
        adj = graphs["temporal.convs.0"][0]  # (T*P, T*P)
        P = adj.size(0) // T
        save(plot_adjacency, "stgcn_adjacency.png", adj, num_frames=T, num_parts=P,
             title="STGCN temporal.convs.0")
        save(plot_temporal_graph, "stgcn_temporal.png", adj, T, P, top_k=args.top_k,
             title="STGCN temporal.convs.0, strongest edges")
        save(plot_adjacency, "stgcn_spatial.png", graphs["spatial.convs.0"][t],
             num_frames=1, num_parts=P, title=f"STGCN spatial.convs.0, frame {t}")
    return written


if __name__ == "__main__":
    main()
