"""CTL's three review findings, measured on real tracklets at initialisation (no training).

DESIGN.md "CTL: what a review of the implementation found". For each finding, the
quantity the review named, per setting, on real cuhk03-pair1 clips with their real
keypoints (ImageNet EfficientNet-Lite0, 256 x 128, 16 x 8 maps):

1. **Heatmap sharpness** (eq. 1): per heatmap temperature, the mean cosine of the s1
   part features with the global feature V_g, the mean cosine between part features of
   keypoints in different cells, and the heatmaps' total-variation distance from uniform.
   Read from the frozen-protocol feature cache (``--cache``).
2. **Cross-scale attention** (eq. 5): at initialisation, the mean largest weight of the
   attention rows and the share of rows above 0.9 (near one-hot), s1 -> s3 and s2 -> s3,
   scaled by 1/sqrt(d) or not. From the cache.
3. **Gradient balance** (fine-tune protocol): the norm of the backbone-map gradient that
   the loss on V_f^a sends through the part branch, over the one it sends through the
   global branch (V_g), for ``part_reduce`` sum / mean, ``normalize_parts`` and
   ``part_grad_scale``; the batch-hard triplet + label-smoothed CE on V_f^a of a PK
   batch of real clips run through the backbone in train mode.

Usage (from the repository root)::

    python benchmarks/ctl_diagnostics.py --cache CACHE     # cache of 'stgraph cache'
    python benchmarks/ctl_diagnostics.py --quick            # synthetic, tiny: smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, save_results  # noqa: E402

from stgraph.cache import FeatureCache, build_feature_cache, cache_settings  # noqa: E402
from stgraph.data import SyntheticReID, create_dataset  # noqa: E402
from stgraph.engine import make_train_loader  # noqa: E402
from stgraph.graph import KeypointGraphBuilder, keypoint_heatmaps  # noqa: E402
from stgraph.losses import ReIDLoss  # noqa: E402
from stgraph.models import CTL  # noqa: E402
from stgraph.models.backbones import build_backbone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUHK03 = ROOT.parent / "shared" / "data" / "cuhk03-pair1"


def _clips(cache: FeatureCache, n: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``seq_len`` frames of ``n`` query tracklets: maps and keypoints."""
    maps, kps = zip(*(cache.read(list(t.rows[:seq_len]) + [t.rows[-1]] * (seq_len - len(t.rows)))
                      for t in cache.query[:n]), strict=True)
    return torch.stack(maps), torch.stack(kps)  # (n, T, C, h, w), (n, T, 17, 3)


def heatmap_sharpness(maps, kps, image_size, temperatures):
    builder = KeypointGraphBuilder()
    h, w = maps.shape[-2:]
    cell = torch.stack([(kps[..., 1] * h / image_size[0]).long().clamp(0, h - 1),
                        (kps[..., 0] * w / image_size[1]).long().clamp(0, w - 1)], -1)
    rows = []
    for tau in temperatures:
        hm = keypoint_heatmaps(kps, image_size, (h, w), temperature=tau)
        feats = builder(maps, hm)
        s1, vg = feats["s1"], feats.global_feature  # (B, T, 17, C), (B, T, C)
        cos_g = F.cosine_similarity(s1, vg.unsqueeze(2), dim=-1).mean()
        z = F.normalize(s1, dim=-1)
        pair = z @ z.transpose(-1, -2)  # (B, T, 17, 17)
        differ = (cell.unsqueeze(3) != cell.unsqueeze(2)).any(-1)  # keypoints in other cells
        tv = 0.5 * (hm.flatten(-2) - 1.0 / (h * w)).abs().sum(-1).mean()
        rows.append({"temperature": tau, "cos_part_global": float(cos_g),
                     "cos_parts_other_cells": float(pair[differ].mean()),
                     "tv_from_uniform": float(tv)})
    return rows


def cross_scale_attention(maps, kps, image_size, num_classes):
    rows = []
    for scaled in (False, True):
        torch.manual_seed(0)
        model = CTL(num_classes, backbone="efficientnet_lite0", scale_cross_attention=scaled)
        model.train()  # batch-norm statistics of the batch, as in the first training steps
        B, T = maps.shape[:2]
        hm = model.heatmaps(kps, B, T, image_size, maps.shape[-2:], maps.device, maps.dtype)
        feats = model.builder(maps, hm)
        x = {}
        with torch.no_grad():
            for s, layers in model.gcls.items():
                h = feats[s]
                for layer in layers:
                    h = layer(h)
                x[s] = h
            for s, layer in model.cs_gcls.items():
                _, att = layer(x[s], x[model.coarse], return_attention=True)
                top = att.max(dim=-1).values  # (B, T, N_s3)
                rows.append({"scaled": scaled, "fine": s, "mean_max_weight": float(top.mean()),
                             "one_hot_rows": float((top > 0.9).float().mean())})
    return rows


def gradient_balance(dataset, pretrained, num_batches, configs, seq_len, height, width):
    loader = make_train_loader(dataset, seq_len, height, width, 8, 2, seed=0,
                               keypoints=True, pad=0, erasing=0.0)
    batches = [b for _, b in zip(range(num_batches), loader, strict=False)]
    rows = []
    for label, kwargs in configs:
        torch.manual_seed(0)
        model = CTL(dataset.num_train_pids, backbone="efficientnet_lite0",
                    pretrained=pretrained, **kwargs).train()
        criterion = ReIDLoss(dataset.num_train_pids)
        scale = model.part_grad_scale
        ratios = []
        for batch in batches:
            clips, kp, pids = batch["clip"], batch["keypoints"], batch["pid"]
            B, T = clips.shape[:2]
            fmap = model.forward_features(clips).detach().requires_grad_(True)
            hm = model.heatmaps(kp, B, T, (height, width), tuple(fmap.shape[-2:]), fmap.device,
                                fmap.dtype)
            grads = []
            # the forward is the same for every part_grad_scale; with 0 only V_g's path is left
            for s in (scale, 0.0):
                model.part_grad_scale = s
                out = model.forward_head(fmap, hm)
                loss, _ = criterion({"features": (out["features"][1],),
                                     "logits": (out["logits"][1],)}, pids)  # V_f^a's losses
                grads.append(torch.autograd.grad(loss, fmap)[0])
            model.part_grad_scale = scale
            g_total, g_global = grads
            ratios.append(float((g_total - g_global).norm() / g_global.norm().clamp_min(1e-12)))
        rows.append({"setting": label, "part_over_global": sum(ratios) / len(ratios), **kwargs})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", help="feature cache of the dataset ('stgraph cache')")
    p.add_argument("--root", default=str(CUHK03))
    p.add_argument("--clips", type=int, default=64, help="query tracklets for 1 and 2")
    p.add_argument("--batches", type=int, default=2, help="PK batches of 16 clips for 3")
    p.add_argument("--seq-len", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ctl_diagnostics.json"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    tmp = None
    if args.quick:
        dataset = SyntheticReID(num_train_ids=8, num_test_ids=4, min_frames=2, max_frames=4,
                                image_size=(64, 32))
        settings = cache_settings({"name": "synthetic"}, "efficientnet_lite0", "imagenet", 1,
                                  64, 32)
        tmp = tempfile.TemporaryDirectory()
        cache = build_feature_cache(dataset, build_backbone("efficientnet_lite0",
                                                            pretrained="imagenet"),
                                    tmp.name, settings, progress=False)
        args.clips, args.batches = 4, 1
        if args.out == p.get_default("out"):
            args.out = str(Path(tmp.name) / "ctl_diagnostics.json")
    else:
        cache = FeatureCache(args.cache)
        d = cache.settings["dataset"]
        dataset = create_dataset(d["name"], **{k: v for k, v in d.items() if k != "name"})
        settings = cache.settings
    maps, kps = _clips(cache, args.clips, args.seq_len)
    results = {"machine": machine(), "settings": cache.settings}
    results["heatmaps"] = heatmap_sharpness(maps, kps, cache.image_size, (1.0, 0.5, 0.2, 0.1))
    results["cross_scale"] = cross_scale_attention(maps, kps, cache.image_size,
                                                   cache.num_train_pids)
    # part_grad_scale 1: the paper's joint training (stgraph's default 0 sends no part gradient)
    configs = [("paper: sum", {"part_reduce": "sum", "part_grad_scale": 1.0}),
               ("mean", {"part_reduce": "mean", "part_grad_scale": 1.0}),
               ("mean + normalize_parts", {"part_reduce": "mean", "normalize_parts": True,
                                           "part_grad_scale": 1.0}),
               ("mean, part_grad_scale 0.1", {"part_reduce": "mean", "part_grad_scale": 0.1})]
    results["gradients"] = gradient_balance(dataset, settings.get("pretrained"), args.batches,
                                            configs,
                                            args.seq_len, *cache.image_size)

    print("1. heatmaps (s1 parts, real keypoints):")
    print(f"  {'temperature':>11} | {'cos(part, V_g)':>14} | {'cos(parts, other cells)':>23} "
          f"| {'TV from uniform':>15}")
    for r in results["heatmaps"]:
        print(f"  {r['temperature']:11.2f} | {r['cos_part_global']:14.3f} | "
              f"{r['cos_parts_other_cells']:23.3f} | {r['tv_from_uniform']:15.3f}")
    print("2. cross-scale attention at initialisation:")
    for r in results["cross_scale"]:
        print(f"  {'scaled' if r['scaled'] else 'unscaled':>8} {r['fine']}->s3: mean max weight "
              f"{r['mean_max_weight']:.2f}, rows > 0.9: {100 * r['one_hot_rows']:.0f} %")
    print("3. backbone-map gradient of the V_f^a losses, part branch / global branch:")
    for r in results["gradients"]:
        print(f"  {r['setting']:<28} {r['part_over_global']:8.1f}x")
    save_results(Path(args.out), results)
    if tmp is not None:
        tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
