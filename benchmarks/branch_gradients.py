"""Which branch trains the shared backbone tail: each branch's gradient into the tail's maps.

Under the partial protocol (a cache cut inside the backbone, ``stgraph train
--feature-cache``) every branch of a model sends its losses' gradient back through the
same trained tail (Lite0's head conv + BN). This script measures, on PK batches of the
cache in train mode, the norm of the gradient that each branch's losses (label-smoothed
cross-entropy + batch-hard triplet on that branch, as :class:`~stgraph.losses.ReIDLoss`
sums them; CTL's diversity loss as its own row) send into the tail's output maps, and the
cosine between each branch's gradient and the global branch's. A branch whose gradient is
many times the global one's decides what the tail learns; a cosine near 0 means the
branches ask the tail for different things.

For a model built afresh (``--model``, the run's initialisation with ``--seed``) and for
trained checkpoints (e.g. ``runs/accuracy/partial/stgcn/seed0/checkpoint.pth``); a model
whose graph or part branch was trained with its gradient scaled (STGCN's
``graph_grad_scale``, CTL's ``part_grad_scale``) is measured with the factor set to 1:
the gradient each branch would send.

Usage (from the repository root)::

    python benchmarks/branch_gradients.py --cache CACHE --model stgcn ctl
    python benchmarks/branch_gradients.py --cache CACHE \\
        runs/accuracy/partial/stgcn/seed0/checkpoint.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, save_results  # noqa: E402

from stgraph.cache import FeatureCache, FeatureMapHead, make_cached_train_loader  # noqa: E402
from stgraph.checkpoint import load_checkpoint  # noqa: E402
from stgraph.losses import CrossEntropyLabelSmooth, TripletLoss, diversity_loss  # noqa: E402
from stgraph.models import create_model  # noqa: E402
from stgraph.models.base import takes_keypoints, to_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def branch_gradients(head: FeatureMapHead, batch: dict, num_classes: int,
                     margin: float = 0.3) -> dict[str, torch.Tensor]:
    """The gradient of each branch's CE + triplet loss (and of CTL's diversity loss) with
    respect to the tail's output maps ``(B, T, C, h, w)``, for one batch in train mode."""
    maps = to_model(batch["clip"], head.model, "cpu")  # float16 maps in the model's dtype
    B, T = maps.shape[:2]
    tail_out = head.model.backbone.forward_from(maps.flatten(0, 1), head.cut)
    tail_out = tail_out.reshape(B, T, *tail_out.shape[1:]).detach().requires_grad_()
    model = head.model
    if takes_keypoints(model):
        heat = model.heatmaps(to_model(batch["keypoints"], model, "cpu"), B, T, head.image_size,
                              tuple(tail_out.shape[-2:]), tail_out.device, tail_out.dtype)
        out = model.forward_head(tail_out, heat)
    else:
        out = model.forward_head(tail_out)
    ce, tri, pids = CrossEntropyLabelSmooth(num_classes), TripletLoss(margin), batch["pid"]
    losses = {name: ce(lg, pids) + tri(f, pids) for name, lg, f in
              zip(out["branches"], out["logits"], out["features"], strict=True)}
    if "part_features" in out:
        losses["diversity"] = diversity_loss(out["part_features"])
    grads = {}
    for name, loss in losses.items():
        (g,) = torch.autograd.grad(loss, tail_out, retain_graph=True, allow_unused=True)
        grads[name] = torch.zeros_like(tail_out) if g is None else g
    return grads


def measure(head: FeatureMapHead, cache: FeatureCache, num_classes: int, batches: int,
            seed: int) -> dict:
    """Mean over ``batches`` PK batches of each branch's gradient norm, its ratio to the
    global branch's, and its cosine with the global branch's gradient."""
    loader = make_cached_train_loader(cache, 4, 16, 2, seed=seed,
                                      keypoints=takes_keypoints(head.model))
    loader.dataset.set_epoch(0)
    loader.sampler.set_epoch(0)
    head.train()
    sums: dict[str, dict[str, float]] = {}
    for i, batch in enumerate(loader):
        if i == batches:
            break
        grads = branch_gradients(head, batch, num_classes)
        ref = grads.get("global")
        for name, g in grads.items():
            row = sums.setdefault(name, {"norm": 0.0, "ratio": 0.0, "cosine": 0.0})
            row["norm"] += g.norm().item() / batches
            if ref is not None:
                row["ratio"] += (g.norm() / ref.norm().clamp_min(1e-30)).item() / batches
                cos = F.cosine_similarity(g.flatten().double(), ref.flatten().double(), dim=0)
                row["cosine"] += cos.item() / batches
    return sums


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="*")
    p.add_argument("--cache", required=True, help="a cache cut inside the backbone")
    p.add_argument("--model", nargs="*", default=[], help="registry names, built afresh")
    p.add_argument("--model-arg", nargs="*", default=[], metavar="KEY=VALUE",
                   help="constructor arguments of the fresh models (e.g. graph_grad_scale=0)")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                        "branch_gradients.json"))
    args = p.parse_args(argv)
    from stgraph.config import parse_model_args

    cache = FeatureCache(args.cache)
    if cache.cut == "end":
        raise SystemExit(f"{args.cache} holds the backbone's output (cut 'end'): no tail trains")
    s = cache.settings
    extra = parse_model_args(args.model_arg)
    results = {"machine": machine(), "cache": str(args.cache), "cut": cache.cut, "runs": {}}
    sources = [(name, None) for name in args.model] + [(None, c) for c in args.checkpoints]
    for name, ckpt in sources:
        if ckpt is None:
            torch.manual_seed(args.seed)
            kwargs = {"seq_len": 4} if name == "stgcn" else {}
            model = create_model(name, num_classes=cache.num_train_pids,
                                 backbone=s["backbone"], pretrained=s.get("pretrained"),
                                 **kwargs, **extra)
            label = f"{name} (initialisation{', ' + ' '.join(args.model_arg) if extra else ''})"
        else:
            model, cfg = load_checkpoint(ckpt)
            label = str(ckpt)
        for attr in ("graph_grad_scale", "part_grad_scale"):  # what each branch asks for
            if getattr(model, attr, 1.0) != 1.0:
                label += f" ({attr} {getattr(model, attr)} set to 1 to measure)"
                setattr(model, attr, 1.0)
        head = FeatureMapHead(model, cache.image_size, cache.cut)
        rows = measure(head, cache, model.num_classes, args.batches, args.seed)
        results["runs"][label] = rows
        print(f"{label}: gradient into the tail's maps, mean of {args.batches} PK batches")
        for branch, r in rows.items():
            print(f"  {branch:10s} norm {r['norm']:.3e}  x global {r['ratio']:6.2f}  "
                  f"cosine with global {r['cosine']:+.3f}")
    save_results(Path(args.out), results)
    return results


if __name__ == "__main__":
    main()
