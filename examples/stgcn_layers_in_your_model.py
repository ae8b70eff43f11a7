"""Use stgraph's STGCN layers in your own model, on a PyG Batch and on dense tensors.

    python examples/stgcn_layers_in_your_model.py [--channels 2048 --frames 8 --patches 4]

Builds horizontal-patch graphs from (random) backbone feature maps, runs the sparse
AffinityGCNConv on the PyG Batch and its dense twin on (B, N, C) tensors with the same
weights, and checks that both give the same node features.

``examples/layers_in_your_model.py`` goes further: STGCN and CTL layers (affinity GCN,
3D sliding-window GCN, cross-scale GCN) inside your own ``nn.Module``, sparse and dense,
with the same logits and gradients.
"""

import argparse

import torch

from stgraph.graph import PatchGraphBuilder
from stgraph.nn import AffinityGCNConv, DenseAffinityGCN


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--patches", type=int, default=4)
    p.add_argument("--channels", type=int, default=256)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    B, T, C, P = args.clips, args.frames, args.channels, args.patches
    fmap = torch.randn(B, T, C, 4 * P, 8)  # (B, T, C, H, W) as a backbone would give
    builder = PatchGraphBuilder(num_patches=P)

    batch = builder(fmap)  # one complete graph over the T*P patches of each clip
    sparse = AffinityGCNConv(C, 64)
    out_sparse = sparse(batch.x, batch.edge_index)  # (B*T*P, 64)

    dense = DenseAffinityGCN(C, 64)
    dense.load_state_dict(sparse.state_dict())  # identical parameter names
    out_dense, adj = dense(builder.dense(fmap), return_adjacency=True)  # (B, T*P, 64)

    diff = (out_dense.reshape(-1, 64) - out_sparse).abs().max().item()
    print(f"{batch.num_graphs} graphs, {batch.num_nodes} nodes, {batch.num_edges} edges")
    print(f"dense output {tuple(out_dense.shape)}, adjacency {tuple(adj.shape)}")
    print(f"max |dense - sparse| = {diff:.2e}")
    return diff


if __name__ == "__main__":
    main()
