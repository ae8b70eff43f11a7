"""Make the figures of the docs gallery (docs/gallery.md) from synthetic data only.

Trains a small STGCN and a small CTL for a few epochs on :class:`stgraph.data.SyntheticReID`
(procedurally drawn pedestrians, no files: no real person appears in any figure), evaluates
both, and writes PNGs (dpi 100) into ``docs/_static/gallery/``. The PNGs are committed, so
the docs build never runs this script. Regenerate them with::

    python docs/gallery.py                 # about 17 minutes on 2 busy CPU cores
    python docs/gallery.py --epochs 0      # untrained models (about 1.5 minutes), a quick look

Everything is seeded; the numbers still vary a little across machines and torch versions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import torch
from matplotlib.figure import Figure

matplotlib.use("Agg")

from stgraph.data import SyntheticReID, TestClipDataset  # noqa: E402
from stgraph.engine import (  # noqa: E402
    build_optimizer,
    make_train_loader,
    train_one_epoch,
    warmup_cosine,
)
from stgraph.eval import evaluate_with_distances  # noqa: E402
from stgraph.graph import COCO17  # noqa: E402
from stgraph.losses import ReIDLoss  # noqa: E402
from stgraph.models import create_model  # noqa: E402
from stgraph.models.base import takes_keypoints  # noqa: E402
from stgraph.viz import (  # noqa: E402
    plot_cmc,
    plot_model_graph,
    plot_ranking,
    plot_skeleton_graph,
)

OUT = Path(__file__).resolve().parent / "_static" / "gallery"
DPI = 100
HEIGHT, WIDTH, SEQ_LEN = 64, 32, 4
MODELS = {
    "stgcn": {"backbone": "resnet18", "seq_len": SEQ_LEN, "num_patches": 4},
    "ctl": {"backbone": "resnet18"},
}


def train(name: str, dataset: SyntheticReID, epochs: int, seed: int = 0) -> torch.nn.Module:
    """A small model trained for ``epochs`` epochs (P=8 identities x K=4 tracklets)."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=dataset.num_train_pids, **MODELS[name])
    if epochs > 0:
        loader = make_train_loader(dataset, SEQ_LEN, HEIGHT, WIDTH, batch_ids=8,
                                   batch_instances=4, seed=seed,
                                   keypoints=takes_keypoints(model))
        criterion = ReIDLoss(dataset.num_train_pids)
        optimizer = build_optimizer(model, lr=3.5e-4)
        steps = len(loader) * epochs
        scheduler = warmup_cosine(optimizer, steps, len(loader))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            stats = train_one_epoch(model, loader, criterion, optimizer, epoch,
                                    scheduler=scheduler, progress=False)
            print(f"{name} epoch {epoch + 1}/{epochs}: loss {stats['loss']:.3f}  "
                  f"acc {100 * stats['acc']:.0f}%  {time.perf_counter() - t0:.1f}s", flush=True)
    return model.eval()


def shrink(path: Path, limit_kb: int = 200) -> None:
    """Re-save a PNG over ``limit_kb`` with a 256-colour palette (the frames of synthetic
    pedestrians carry pixel noise that RGBA PNGs compress badly; plain plots stay RGBA, whose
    colour bars a palette would band)."""
    if path.stat().st_size <= limit_kb * 1024:
        return
    from PIL import Image

    with Image.open(path) as im:
        pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                         dither=Image.Dither.NONE)
    pal.save(path, optimize=True)


def save(fig, name: str) -> None:
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    shrink(path)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6,
                        help="training epochs per model (0: untrained models)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    dataset = SyntheticReID(num_train_ids=32, num_test_ids=16, image_size=(HEIGHT, WIDTH),
                            seed=0)
    print(dataset.summary())

    # The physical skeleton of CTL (no model): COCO17 at its three scales, drawn on a larger
    # synthetic frame.
    big = SyntheticReID(num_train_ids=1, num_test_ids=1, image_size=(128, 64), seed=0)
    frame_key = big.query[0].frames[0]
    kp, image = big.frame_keypoints(frame_key), big.read_frame(frame_key)
    fig = Figure(figsize=(8.0, 4.5))
    for ax, scale in zip(fig.subplots(1, 3), COCO17.scales, strict=True):
        plot_skeleton_graph(kp, COCO17.physical_adjacency(scale), skeleton=COCO17, image=image,
                            scale=scale, show_skeleton=scale != "s1", vmin=0.0, vmax=1.0,
                            title=f"$A^p$ at {scale} ({COCO17.num_nodes(scale)} nodes)", ax=ax)
    save(fig, "skeleton_physical")

    results = {}
    for name in MODELS:
        model = train(name, dataset, args.epochs)
        keypoints = takes_keypoints(model)
        item = TestClipDataset(dataset, [dataset.query[0]], SEQ_LEN, HEIGHT, WIDTH,
                               keypoints=keypoints)[0]
        clips = item["clip"][None]
        kps = item["keypoints"][None] if keypoints else None
        whats = ("adjacency", "temporal") if name == "stgcn" else (
            "adjacency", "skeleton", "cross-scale")
        for what in whats:
            fig = plot_model_graph(model, clips, what, keypoints=kps, top_k=20)
            save(fig, f"{name}_{what.replace('-', '_')}")
        if name == "ctl":  # the coarsest scale's graph over the body
            fig = plot_model_graph(model, clips, "skeleton", keypoints=kps, layer="gcls.s3.0")
            save(fig, "ctl_skeleton_s3")
        if name == "stgcn":  # the spatial branch: one frame's P x P graph
            fig = plot_model_graph(model, clips, "adjacency", layer="spatial.convs.0")
            save(fig, "stgcn_spatial_adjacency")

        metrics, distmat = evaluate_with_distances(model, dataset, SEQ_LEN, HEIGHT, WIDTH,
                                                   batch_size=16, progress=False)
        print(f"{name}: rank-1 {100 * metrics['rank1']:.1f}%  mAP {100 * metrics['mAP']:.1f}%")
        results[name] = metrics
        row = distmat[0]
        top = torch.argsort(row, stable=True)[:5].tolist()

        def frames(t):
            return [dataset.read_frame(k) for k in t.frames[:: max(1, len(t.frames) // 4)][:4]]

        query = dataset.query[0]
        fig = plot_ranking(frames(query), [frames(dataset.gallery[j]) for j in top], row[top],
                           query_pid=query.pid,
                           gallery_pids=[dataset.gallery[j].pid for j in top],
                           title=f"{name.upper()}: query 0 and its top 5")
        save(fig, f"{name}_ranking")

    fig = plot_cmc([results[n] for n in MODELS], labels=[n.upper() for n in MODELS],
                   title=f"SyntheticReID, {len(dataset.query)} queries")
    save(fig, "cmc")


if __name__ == "__main__":
    main()
