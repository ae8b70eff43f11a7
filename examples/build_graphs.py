"""Build STGCN patch graphs and CTL keypoint graphs from backbone feature maps.

    python examples/build_graphs.py                    # a few seconds
    python examples/build_graphs.py --backbone resnet50 --height 256 --width 128 --threads 0
    python examples/build_graphs.py --backbone none --channels 2048   # random feature maps

Takes a few clips of the built-in SyntheticReID dataset with their ground-truth keypoints
(``frame_keypoints``, rescaled to the input by ``load_clip_with_keypoints``), runs a small
randomly initialised backbone on them (or draws random feature maps with ``--backbone none``)
and builds, from the same feature maps:

* STGCN's horizontal-patch graphs (``PatchGraphBuilder``): the clip-level "temporal" graph
  and the per-frame "spatial" graphs, as PyG ``Batch``es and as dense ``(B, T*P, C)`` tensors;
* CTL's keypoint graphs at three scales (``KeypointGraphBuilder``): keypoints -> softmax
  heatmaps on the feature grid (``keypoint_heatmaps``) -> part features per scale (eq. 1 of
  CTL), dense ``(B, T, N_s, C)`` and as PyG ``Batch``es with node attributes
  ``clip`` / ``frame`` / ``part`` / ``scale`` and the skeleton's edges within each frame.

It prints the shapes and attributes, and checks that each ``Batch`` converts back to the
dense tensor exactly.
"""

import argparse

import torch

from stgraph.data import SyntheticReID, load_clip_with_keypoints
from stgraph.graph import (
    COCO17,
    KeypointGraphBuilder,
    PatchGraphBuilder,
    keypoint_heatmaps,
    prior_pose,
)
from stgraph.models.backbones import build_backbone


def _span(t: torch.Tensor) -> str:
    lo, hi = int(t.min()), int(t.max())
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


def describe(batch) -> str:
    """One line about a PyG Batch: graphs, nodes, edges and the node attributes it carries."""
    attrs = [k for k in ("clip", "frame", "part", "scale") if k in batch]
    return (f"Batch of {batch.num_graphs} graphs, {batch.num_nodes} nodes, x "
            f"{tuple(batch.x.shape)}, edge_index {tuple(batch.edge_index.shape)}; "
            + ", ".join(f"{k} {_span(batch[k])}" for k in attrs))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18",
                   choices=["none", "resnet18", "resnet34", "resnet50"],
                   help="feature extractor (random init); none: random feature maps")
    p.add_argument("--channels", type=int, default=256,
                   help="channels of the random feature maps (--backbone none)")
    p.add_argument("--height", type=int, default=128, help="input height in pixels")
    p.add_argument("--width", type=int, default=64, help="input width in pixels")
    p.add_argument("--clips", type=int, default=2, help="clips B")
    p.add_argument("--frames", type=int, default=4, help="frames per clip T")
    p.add_argument("--patches", type=int, default=4, help="STGCN patches per frame P")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1, fastest for tiny inputs on a shared machine; "
                        "0: torch's default, all cores)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, H, W = args.clips, args.frames, args.height, args.width

    # Clips and ground-truth keypoints (in pixels of the H x W input) from the synthetic data.
    dataset = SyntheticReID(num_train_ids=B, num_test_ids=1, image_size=(H, W))
    pairs = [load_clip_with_keypoints(dataset, t.frames[:T], H, W) for t in dataset.train[:B]]
    clips = torch.stack([c for c, _ in pairs])  # (B, T, 3, H, W)
    keypoints = torch.stack([k for _, k in pairs])  # (B, T, 17, 3) rows (x, y, score)
    print(f"clips {tuple(clips.shape)}, keypoints {tuple(keypoints.shape)} from {dataset!r}")

    # Feature maps (B, T, C, h, w).
    if args.backbone == "none":
        fmap = torch.randn(B, T, args.channels, H // 16, W // 16)
        print(f"random feature maps {tuple(fmap.shape)}")
    else:
        net = build_backbone(args.backbone).eval()  # last stride 1: maps of H/16 x W/16
        with torch.no_grad():
            fmap = net(clips.flatten(0, 1))
        fmap = fmap.view(B, T, *fmap.shape[1:])
        print(f"{args.backbone} feature maps {tuple(fmap.shape)}")
    C, h, w = fmap.shape[2:]

    # --- STGCN: horizontal patches --------------------------------------------------------
    patches = PatchGraphBuilder(num_patches=args.patches)
    dense_patches = patches.dense(fmap)  # (B, T*P, C)
    temporal = patches(fmap)  # one complete graph over the T*P patches of each clip
    spatial = patches(fmap, graph="spatial")  # one complete graph per frame
    same = torch.equal(PatchGraphBuilder.to_dense(temporal), dense_patches)
    print(f"patch graph, temporal: {describe(temporal)}")
    print(f"patch graph, spatial:  {describe(spatial)}")
    print(f"patch graph, dense: {tuple(dense_patches.shape)}; to_dense(batch) == dense: {same}")

    # --- CTL: keypoints -> heatmaps -> part features at three scales -----------------------
    heat = keypoint_heatmaps(keypoints, (H, W), (h, w))  # (B, T, 17, h, w), each map sums to 1
    sums = heat.flatten(-2).sum(-1)
    print(f"heatmaps {tuple(heat.shape)} on the {h} x {w} feature grid, each summing to 1: "
          f"{bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-5))}")
    prior = torch.from_numpy(prior_pose(H, W))[:, :2]
    shift = (keypoints[..., :2] - prior).norm(dim=-1).mean()
    print(f"ground truth vs the prior pose (used when a frame has no keypoints): "
          f"{shift:.1f} px apart on average")

    builder = KeypointGraphBuilder(COCO17)
    feats = builder(fmap, heat)
    print(f"global feature (GAP per frame) {tuple(feats.global_feature.shape)}")
    keypoint_graphs = {}
    for scale in feats.scales:
        batch = builder.to_batch(feats[scale], scale)
        same = torch.equal(KeypointGraphBuilder.to_dense(batch), feats[scale])
        names = COCO17.part_names(scale)
        print(f"keypoint graph {scale} ({len(names)} nodes: {', '.join(names[:3])}, ...): "
              f"dense {tuple(feats[scale].shape)}")
        print(f"  {describe(batch)}; to_dense(batch) == dense: {same}")
        keypoint_graphs[scale] = batch
    return {"feature_maps": fmap, "patch_dense": dense_patches, "patch_batch": temporal,
            "spatial_batch": spatial, "heatmaps": heat, "parts": feats.parts,
            "keypoint_batches": keypoint_graphs}


if __name__ == "__main__":
    main()
