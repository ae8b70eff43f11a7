"""Put stgraph's STGCN and CTL graph layers inside your own PyTorch model, sparse or dense.

    python examples/layers_in_your_model.py            # a few seconds
    python examples/layers_in_your_model.py --channels 2048 --frames 8 --height 16 --width 8

Two small heads a user might write, each an ``nn.Module`` that takes backbone feature maps
``(B, T, C, H, W)`` and returns class logits:

* ``PatchGraphHead`` (STGCN-style): horizontal-patch graph of each clip -> affinity GCN ->
  mean over the nodes -> linear classifier;
* ``KeypointGraphHead`` (CTL-style): keypoint heatmaps pool the maps into graphs at the
  keypoint scale s1 and the part scale s3 -> a 3D sliding-window GCN per scale -> a
  cross-scale GCN from s1 to s3 -> mean over parts and frames -> linear classifier.

Each head is built twice from the same code: with the sparse PyG ``MessagePassing`` layers on
PyG ``Batch``es (``AffinityGCNConv``, ``SlidingWindowGCN``, ``CrossScaleGCN``) and with their
dense twins on ``(B, N, C)`` / ``(B, T, N, C)`` tensors (``DenseAffinityGCN``,
``DenseSlidingWindowGCN``, ``DenseCrossScaleGCN``). The twins have the same ``state_dict``
keys, so the weights are copied across, and the script checks that both forms give the same
logits and the same gradients.
"""

import argparse

import torch
from torch import nn
from torch_geometric.nn import global_mean_pool

from stgraph.graph import (
    COCO17,
    KeypointGraphBuilder,
    PatchGraphBuilder,
    keypoint_heatmaps,
    prior_pose,
)
from stgraph.nn import (
    AffinityGCNConv,
    CrossScaleGCN,
    DenseAffinityGCN,
    DenseCrossScaleGCN,
    DenseSlidingWindowGCN,
    SlidingWindowGCN,
)


class PatchGraphHead(nn.Module):
    """Patch graph -> affinity GCN -> mean over nodes -> classifier (STGCN's temporal branch)."""

    def __init__(self, channels: int, hidden: int, num_classes: int, num_patches: int = 4,
                 sparse: bool = False) -> None:
        super().__init__()
        self.sparse = sparse
        self.builder = PatchGraphBuilder(num_patches)
        self.gcn = (AffinityGCNConv if sparse else DenseAffinityGCN)(channels, hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, feature_maps: torch.Tensor) -> torch.Tensor:
        if self.sparse:  # PyG: one graph per clip, nodes of all clips stacked
            batch = self.builder(feature_maps)  # x (B*T*P, C), edge_index, batch (clip)
            h = torch.relu(self.gcn(batch.x, batch.edge_index))  # (B*T*P, hidden)
            pooled = global_mean_pool(h, batch.batch)  # (B, hidden)
        else:  # dense: (B, T*P, C)
            h = torch.relu(self.gcn(self.builder.dense(feature_maps)))  # (B, T*P, hidden)
            pooled = h.mean(dim=1)
        return self.classifier(pooled)


class KeypointGraphHead(nn.Module):
    """Keypoint graphs at s1 and s3 -> 3D-GCL per scale -> CS-GCL s1 -> s3 -> classifier (CTL)."""

    SCALES = ("s1", "s3")

    def __init__(self, channels: int, num_classes: int, tau: int = 3,
                 sparse: bool = False) -> None:
        super().__init__()
        self.sparse = sparse
        self.builder = KeypointGraphBuilder(COCO17)
        window_gcn = SlidingWindowGCN if sparse else DenseSlidingWindowGCN
        self.gcls = nn.ModuleDict({
            s: window_gcn(channels, channels, COCO17.physical_adjacency(s), tau=tau)
            for s in self.SCALES
        })
        self.cross = (CrossScaleGCN if sparse else DenseCrossScaleGCN)(channels, channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, feature_maps: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        feats = self.builder(feature_maps, heatmaps)  # parts (B, T, N_s, C) per scale
        if self.sparse:  # PyG node sets with clip / frame / part attributes
            T = feature_maps.size(1)
            b = {s: self.builder.to_batch(feats[s], s) for s in self.SCALES}
            h = {s: self.gcls[s](b[s].x, clip=b[s].clip, frame=b[s].frame, part=b[s].part)
                 for s in self.SCALES}  # (B*T*N_s, C), the windows built from the attributes
            frame_graph = {s: b[s].clip * T + b[s].frame for s in self.SCALES}
            parts = h["s3"] + self.cross(h["s1"], h["s3"], batch_fine=frame_graph["s1"],
                                         batch_coarse=frame_graph["s3"])  # (B*T*5, C)
            pooled = global_mean_pool(parts, b["s3"].clip)  # (B, C)
        else:  # dense (B, T, N_s, C)
            h = {s: self.gcls[s](feats[s]) for s in self.SCALES}
            parts = h["s3"] + self.cross(h["s1"], h["s3"])  # (B, T, 5, C)
            pooled = parts.mean(dim=(1, 2))
        return self.classifier(pooled)


@torch.no_grad()
def as_if_trained(model: nn.Module) -> nn.Module:
    """Move the batch norms off their initial values (weight 1, bias 0, mean 0, var 1).

    At initialisation the cross-scale relation's pairs ``j = i`` (``x_i - x_i = 0``)
    normalise to exactly 0 in train mode, ReLU's kink, where the two forms may pick
    different subgradients; a trained model is away from it.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(std=0.2)
            m.running_mean.normal_(std=0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest magnitude (sums round differently)."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def compare(name: str, dense: nn.Module, sparse: nn.Module, *inputs) -> float:
    """Same weights in both forms; the largest relative difference of logits and gradients."""
    sparse.load_state_dict(as_if_trained(dense).state_dict())  # same parameter/buffer names
    logits, grads = [], []
    for mode in (True, False):  # train mode (batch statistics), then eval mode
        dense.train(mode)
        sparse.train(mode)
        dense.zero_grad()
        sparse.zero_grad()
        out_d, out_s = dense(*inputs), sparse(*inputs)
        out_d.square().sum().backward()
        out_s.square().sum().backward()
        logits.append(rel_diff(out_d, out_s))
        grads.append(rel_diff(torch.cat([q.grad.flatten() for q in dense.parameters()]),
                              torch.cat([q.grad.flatten() for q in sparse.parameters()])))
    params = sum(p.numel() for p in dense.parameters())
    print(f"{name}: {params} parameters, logits {tuple(out_d.shape)}; dense vs sparse, "
          f"largest relative difference: logits {max(logits):.1e}, gradients {max(grads):.1e}")
    return max(logits + grads)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=2, help="clips B")
    p.add_argument("--frames", type=int, default=4, help="frames per clip T")
    p.add_argument("--channels", type=int, default=64, help="feature map channels C")
    p.add_argument("--height", type=int, default=8, help="feature map height")
    p.add_argument("--width", type=int, default=4, help="feature map width")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--double", action="store_true",
                   help="float64 throughout: the two forms then agree to about 1e-15")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1, fastest for tiny inputs on a shared machine; "
                        "0: torch's default, all cores)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.double:
        torch.set_default_dtype(torch.float64)  # restored below
    try:
        return run(args)
    finally:
        torch.set_default_dtype(torch.float32)


def run(args) -> dict:
    torch.manual_seed(0)
    B, T, C, H, W = args.clips, args.frames, args.channels, args.height, args.width
    fmap = torch.randn(B, T, C, H, W)  # as a backbone would give for B clips of T frames
    # keypoints (x, y, score) in pixels of 16x-larger frames: the prior pose, jittered
    pose = torch.from_numpy(prior_pose(16 * H, 16 * W)).to(fmap.dtype)
    keypoints = pose + torch.randn(B, T, 17, 3) * torch.tensor([2.0, 2.0, 0.0])
    heatmaps = keypoint_heatmaps(keypoints, (16 * H, 16 * W), (H, W))  # (B, T, 17, H, W)
    print(f"feature maps {tuple(fmap.shape)}, heatmaps {tuple(heatmaps.shape)}, {fmap.dtype}")

    torch.manual_seed(1)
    patch_diff = compare("PatchGraphHead", PatchGraphHead(C, 32, args.classes),
                         PatchGraphHead(C, 32, args.classes, sparse=True), fmap)
    torch.manual_seed(2)
    keypoint_diff = compare("KeypointGraphHead", KeypointGraphHead(C, args.classes),
                            KeypointGraphHead(C, args.classes, sparse=True), fmap, heatmaps)
    return {"patch": patch_diff, "keypoint": keypoint_diff}


if __name__ == "__main__":
    main()
