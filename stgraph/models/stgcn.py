r"""STGCN: spatial-temporal graph convolutional network for video re-ID.

Yang, Zheng, Yang, Chen and Tian, "Spatial-Temporal Graph Convolutional Network
for Video-based Person Re-identification", CVPR 2020.
https://openaccess.thecvf.com/content_CVPR_2020/html/Yang_Spatial-Temporal_Graph_Convolutional_Network_for_Video-Based_Person_Re-Identification_CVPR_2020_paper.html

Three branches on the backbone's clip feature maps (B, T, C, h, w):

* temporal: one affinity graph over all T*P patch nodes of the clip, M graph
  convolution layers, max-pool over nodes -> f_t (C);
* spatial: one affinity graph per frame over its P patches (own weights),
  channels reduced to ``spatial_channels``, max-pool over the P nodes, frames
  concatenated -> f_s (T * spatial_channels);
* global: GAP per frame, mean over time -> f_g (C).

Each branch has a BNNeck and classifier; the test embedding concatenates the
post-BN features of the three branches.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stgraph.graph import PatchGraphBuilder
from stgraph.kernels.backend import BACKENDS
from stgraph.models.base import ReIDOutput, VideoReIDModel, check_positive, scale_gradient
from stgraph.models.registry import register_model
from stgraph.nn import AffinityGCNConv, BNNeck, DenseAffinityGCN

__all__ = ["STGCN", "STGCNBranch"]

#: Graph paths: the dense layer's backends (``"auto"``, ``"torch"``, ``"triton"``), the sparse
#: PyG layers (``"pyg"``), and ``"dense"``, the old name of ``"auto"``.
_BACKENDS = (*BACKENDS, "pyg", "dense")


def _check_backend(backend: str) -> str:
    """``backend`` with the alias ``"dense"`` resolved to ``"auto"``."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(_BACKENDS)}")
    return "auto" if backend == "dense" else backend


class STGCNBranch(nn.Module):
    r"""A stack of affinity graph convolutions, STGCN eq. (4)-(5).

    .. math::
        X^m = \sigma\big(\mathrm{BN}(\hat{A}^m X^{m-1} W^m)\big), \qquad
        X^m := X^m + X^{m-1} \;\; (2 \le m \le M)

    with :math:`\hat{A}^m` the normalised affinity adjacency of :math:`X^{m-1}`
    (:class:`~stgraph.nn.DenseAffinityGCN`), BN a batch norm over the
    channels of all nodes, :math:`\sigma` = LeakyReLU(0.1).

    Args:
        in_channels (int): input node channels.
        out_channels (int): channels of every layer's output.
        num_layers (int): :math:`M`. (default: :obj:`2`, our choice)
        embed_channels (int, optional): width of :math:`\phi` in every layer
            (default: each layer's input width).
        backend (str): the dense path on ``(B, N, C)``
            (:class:`~stgraph.nn.DenseAffinityGCN`) with its propagation backend,
            ``"auto"`` (fused Triton kernel for CUDA inputs when Triton is installed,
            else batched matmul), ``"torch"`` or ``"triton"``; or ``"pyg"``
            (:class:`~stgraph.nn.AffinityGCNConv` on the edges of a PyG graph). All hold
            the same parameters and give the same numbers. ``"dense"`` is an alias of
            ``"auto"``. (default: ``"auto"``)

    Raises:
        ValueError: an unknown ``backend``, or ``num_layers < 1``.

    Shapes:
        - **input:** dense :math:`(B, N, C)`, or for ``"pyg"`` node features
          :math:`(|\mathcal{V}|, C)` plus ``edge_index``
        - **output:** same layout with ``out_channels`` channels
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int = 2,
                 embed_channels: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        backend = _check_backend(backend)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.backend = backend
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for m in range(num_layers):
            c_in = in_channels if m == 0 else out_channels
            if backend == "pyg":
                conv = AffinityGCNConv(c_in, out_channels, embed_channels=embed_channels)
            else:
                conv = DenseAffinityGCN(c_in, out_channels, embed_channels=embed_channels,
                                        backend=backend)
            self.convs.append(conv)
            self.norms.append(nn.BatchNorm1d(out_channels))

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        for m, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = conv(x) if edge_index is None else conv(x, edge_index)
            h = norm(h.reshape(-1, h.size(-1))).reshape(h.shape)  # BN over all nodes
            h = F.leaky_relu(h, 0.1)
            x = h + x if m >= 1 else h  # residual from the second layer on
        return x


@register_model("stgcn")
class STGCN(VideoReIDModel):
    r"""STGCN (Yang et al., CVPR 2020): temporal, spatial and global branches.

    Args:
        num_classes (int): number of training identities.
        backbone (str): a name of :func:`~stgraph.models.backbones.list_backbones`.
            (default: ``"resnet50"``)
        last_stride (int): backbone's last stride. (default: :obj:`1`, as the paper)
        pretrained (str, optional): local path of torchvision ImageNet weights.
        seq_len (int): frames per clip :math:`T`; the spatial feature concatenates
            the frames, so every clip must have this length. (default: :obj:`8`)
        num_patches (int): horizontal patches :math:`P` per frame. (default: :obj:`4`, ours)
        num_layers (int): graph layers :math:`M` per branch. (default: :obj:`2`, ours)
        embed_channels (int, optional): width of :math:`\phi`; default the input width.
        spatial_channels (int): per-frame width of the spatial branch. (default: :obj:`256`)
        backend (str): graph path, as :class:`STGCNBranch`: ``"auto"``, ``"torch"``,
            ``"triton"`` (dense, with that propagation backend) or ``"pyg"``; ``"dense"``
            is an alias of ``"auto"``. (default: ``"auto"``)
        graph_grad_scale (float): factor on the gradient the two graph branches send into
            the backbone through the patch features (:func:`~stgraph.models.scale_gradient`;
            the forward pass is unchanged): 1 is the paper's joint training, 0 trains the
            backbone by the global branch alone while the graph branches learn on its maps.
            (default: :obj:`0.0`, ours: at initialisation the graph branches send 14x the
            global branch's gradient, nearly orthogonal to it, and with 1 the global
            branch falls far below TP; on cuhk03-pair1, partial protocol, 0 ranks 38.5 %
            rank-1 against 27.0 % with 1, 2 seeds, docs/results.md)

    Raises:
        ValueError: a size below 1, an unknown ``backend``, or ``graph_grad_scale``
            negative or not finite.

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`, the backbone map height
          divisible by ``num_patches``
        - **output:** dict with ``embedding`` :math:`(B, 2C + T \cdot 256)` and
          branches ``("temporal", "spatial", "global")``
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, seq_len: int = 8, num_patches: int = 4,
                 num_layers: int = 2, embed_channels: int | None = None,
                 spatial_channels: int = 256, backend: str = "auto",
                 graph_grad_scale: float = 0.0) -> None:
        check_positive(seq_len=seq_len, num_patches=num_patches, num_layers=num_layers,
                       embed_channels=embed_channels, spatial_channels=spatial_channels)
        backend = _check_backend(backend)
        if not 0 <= graph_grad_scale < float("inf"):
            raise ValueError(f"graph_grad_scale must be finite and >= 0, got {graph_grad_scale}")
        super().__init__(num_classes, backbone, last_stride, pretrained)
        C = self.feat_channels
        self.seq_len = seq_len
        self.backend = backend
        self.graph_grad_scale = float(graph_grad_scale)
        self.builder = PatchGraphBuilder(num_patches)
        self.temporal = STGCNBranch(C, C, num_layers, embed_channels, backend)
        self.spatial = STGCNBranch(C, spatial_channels, num_layers, embed_channels, backend)
        self.necks = nn.ModuleList([
            BNNeck(C, num_classes),
            BNNeck(seq_len * spatial_channels, num_classes),
            BNNeck(C, num_classes),
        ])

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        B, T = feature_maps.shape[:2]
        if T != self.seq_len:
            raise ValueError(
                f"STGCN was built for clips of seq_len={self.seq_len} frames, got {T}; "
                "the spatial feature concatenates the frames"
            )
        P = self.builder.num_patches
        x = self.builder.dense(feature_maps)  # (B, T*P, C)
        x_graph = scale_gradient(x, self.graph_grad_scale)  # what the graph branches take
        if self.backend != "pyg":
            x_t = self.temporal(x_graph)  # (B, T*P, C)
            x_s = self.spatial(x_graph.reshape(-1, P, x.size(-1)))  # (B*T, P, C_s)
        else:
            gt = self.builder.to_batch(x_graph, T, graph="temporal")
            x_t = self.builder.to_dense(gt.update({"x": self.temporal(gt.x, gt.edge_index)}))
            gs = self.builder.to_batch(x_graph, T, graph="spatial")
            x_s = self.spatial(gs.x, gs.edge_index).reshape(B * T, P, -1)
        f_t = x_t.amax(dim=1)  # (B, C): max over the clip's nodes
        f_s = x_s.amax(dim=1).reshape(B, -1)  # (B, T*C_s): max over each frame's nodes
        # GAP of every frame, mean over time: the mean of the equal-sized stripes' means
        f_g = x.mean(dim=1)  # (B, C)
        return self._output(("temporal", "spatial", "global"), [f_t, f_s, f_g], self.necks)

