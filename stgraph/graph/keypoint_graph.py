r"""Multi-scale keypoint graphs over the frames of a clip (CTL).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.1, eq. (1): keypoint heatmaps
pool each frame's feature map into one node per keypoint (``s1``); coarser
scales average the keypoints of each part; the global feature is the GAP of
the map.

Node order is *frame-major* as everywhere in stgraph: in the sparse form,
node ``(b * T + t) * N_s + n`` is node ``n`` of frame ``t`` of clip ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from stgraph.graph.skeleton import COCO17, Skeleton

__all__ = ["KeypointFeatures", "KeypointGraphBuilder"]


@dataclass
class KeypointFeatures:
    """Node features of the multi-scale keypoint graphs of a batch of clips.

    Attributes:
        parts (dict[str, Tensor]): scale name -> part features
            ``(B, T, N_s, C)``, finest scale first (``"s1"``, ``"s2"``, ...).
        global_feature (Tensor): the GAP of each frame's map, ``(B, T, C)``.
    """

    parts: dict[str, Tensor]
    global_feature: Tensor

    def __getitem__(self, scale: str) -> Tensor:
        if scale not in self.parts:
            raise KeyError(f"unknown scale {scale!r}; choose one of: {', '.join(self.parts)}")
        return self.parts[scale]

    @property
    def scales(self) -> tuple[str, ...]:
        return tuple(self.parts)


class KeypointGraphBuilder:
    r"""Turn clip feature maps and keypoint heatmaps into multi-scale part graphs (CTL, eq. 1).

    .. math::
        V_{s_1}[t, k] = \sum_{h, w} m^t_k(h, w)\, F_t(h, w, :), \qquad
        V_{s}[t, n] = \frac{1}{|P_n|} \sum_{k \in P_n} V_{s_1}[t, k], \qquad
        V_g[t] = \frac{1}{HW} \sum_{h, w} F_t(h, w, :)

    The heatmaps are expected already normalised over the ``H * W`` cells (as
    :func:`~stgraph.graph.keypoint_heatmaps` returns, or a pose model's maps
    through :func:`~stgraph.graph.heatmap_softmax`). Eq. (1) writes
    ":math:`g_{GAP}(F_t \otimes m)`"; with a normalised map we take the
    weighted *sum* (stgraph DESIGN.md), a weighted average of the cells, so a
    uniform map gives exactly :math:`V_g` (the literal average would scale it
    by :math:`1 / HW`).

    The sparse form (:meth:`to_batch`) is one PyG graph per clip holding all
    its ``T * N_s`` nodes, with the scale's physical adjacency
    :math:`A^p_s` (both directions, no self-loops) inside each frame and no
    edge across frames (our choice: the temporal edges depend on the layer,
    e.g. the windows of :class:`~stgraph.nn.SlidingWindowGCN`, which builds
    its own).

    Args:
        skeleton (Skeleton, optional): keypoints, edges and part groupings.
            (default: :data:`~stgraph.graph.COCO17`)

    Shapes:
        - **input:** feature maps :math:`(B, T, C, H, W)`, heatmaps
          :math:`(B, T, K, H, W)`
        - **output:** :class:`KeypointFeatures` with parts
          :math:`(B, T, N_s, C)` per scale and the global feature
          :math:`(B, T, C)`; :meth:`to_batch` a ``Batch`` of :math:`B` graphs.

    Raises:
        ValueError: inputs not 5-D, or shapes that do not match (the message
            names both shapes).

    Examples:
        >>> builder = KeypointGraphBuilder()
        >>> fmap, heat = torch.randn(2, 3, 8, 16, 8), torch.full((2, 3, 17, 16, 8), 1 / 128)
        >>> feats = builder(fmap, heat)
        >>> [tuple(feats[s].shape) for s in feats.scales]
        [(2, 3, 17, 8), (2, 3, 10, 8), (2, 3, 5, 8)]
        >>> builder.to_batch(feats["s2"], "s2").num_graphs
        2
    """

    def __init__(self, skeleton: Skeleton = COCO17) -> None:
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"skeleton must be a Skeleton, got {type(skeleton).__name__}")
        self.skeleton = skeleton
        self._groups = {s: skeleton.group_matrix(s, dtype=torch.float64)
                        for s in skeleton.scales[1:]}
        self._edges = {s: skeleton.physical_adjacency(s).nonzero().t().flip(0).contiguous()
                       for s in skeleton.scales}  # (2, E) source, target per frame

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(skeleton={self.skeleton.name!r})"

    def _check(self, feature_maps: Tensor, heatmaps: Tensor) -> None:
        if feature_maps.dim() != 5:
            raise ValueError(
                f"expected feature maps of shape (B, T, C, H, W), got {tuple(feature_maps.shape)}"
            )
        B, T, _, H, W = feature_maps.shape
        K = self.skeleton.num_keypoints
        if heatmaps.shape != (B, T, K, H, W):
            raise ValueError(
                f"expected heatmaps of shape {(B, T, K, H, W)} = (B, T, K, H, W) to match feature "
                f"maps {tuple(feature_maps.shape)} and the {K} keypoints of skeleton "
                f"{self.skeleton.name!r}, got {tuple(heatmaps.shape)}"
            )

    def __call__(self, feature_maps: Tensor, heatmaps: Tensor) -> KeypointFeatures:
        """Part features at every scale and the global feature; see the class docstring."""
        self._check(feature_maps, heatmaps)
        heatmaps = heatmaps.to(feature_maps.dtype)
        s1 = torch.einsum("btkhw,btchw->btkc", heatmaps, feature_maps)  # (B, T, K, C)
        parts = {self.skeleton.scales[0]: s1}
        for scale, g in self._groups.items():
            g = g.to(dtype=s1.dtype, device=s1.device)
            parts[scale] = torch.einsum("nk,btkc->btnc", g, s1)  # (B, T, N_s, C)
        return KeypointFeatures(parts=parts, global_feature=feature_maps.mean(dim=(-2, -1)))

    def to_batch(self, x: Tensor, scale: str) -> Batch:
        """Wrap part features ``(B, T, N_s, C)`` of ``scale`` as a PyG ``Batch``.

        One graph per clip; node attributes ``x``, ``clip`` (0..B-1), ``frame``
        (0..T-1), ``part`` (0..N_s-1) and ``scale`` (the scale's index in
        ``skeleton.scales``); edges the physical adjacency within each frame.

        Raises:
            ValueError: unknown ``scale`` or ``x`` not ``(B, T, N_s, C)``.
        """
        self.skeleton._check_scale(scale)
        N = self.skeleton.num_nodes(scale)
        if x.dim() != 4 or x.size(2) != N:
            raise ValueError(
                f"expected part features of shape (B, T, {N}, C) for scale {scale!r}, "
                f"got {tuple(x.shape)}"
            )
        B, T, _, C = x.shape
        dev = x.device
        nodes = T * N
        edges = self._edges[scale].to(dev)  # (2, E) within one frame
        offsets = torch.arange(T, device=dev) * N  # one frame after the other
        edge_index = (edges.unsqueeze(1) + offsets.view(1, -1, 1)).reshape(2, -1)  # one clip
        ids = torch.arange(nodes, device=dev)
        frame, part = ids // N, ids % N
        scale_id = torch.full((nodes,), self.skeleton.scales.index(scale), device=dev)
        xs = x.reshape(B, nodes, C)
        return Batch.from_data_list([
            Data(x=xs[b], edge_index=edge_index, clip=torch.full((nodes,), b, device=dev),
                 frame=frame, part=part, scale=scale_id)
            for b in range(B)
        ])

    def to_batches(self, features: KeypointFeatures) -> dict[str, Batch]:
        """:meth:`to_batch` for every scale of ``features``."""
        return {scale: self.to_batch(x, scale) for scale, x in features.parts.items()}

    @staticmethod
    def to_dense(batch: Batch) -> Tensor:
        """Inverse of :meth:`to_batch`: node features back to ``(B, T, N_s, C)``.

        Places each node by its ``clip``, ``frame`` and ``part``, so any node
        order is accepted.

        Raises:
            ValueError: the nodes do not fill the ``B x T x N_s`` grid exactly once.
        """
        clip, frame, part = batch.clip, batch.frame, batch.part
        B, T, N = int(clip.max()) + 1, int(frame.max()) + 1, int(part.max()) + 1
        flat = (clip * T + frame) * N + part
        if batch.x.size(0) != B * T * N or flat.unique().numel() != B * T * N:
            raise ValueError(
                f"the {batch.x.size(0)} nodes do not fill a clip x frame x part grid of "
                f"{B} x {T} x {N} exactly once"
            )
        out = batch.x.new_empty(B * T * N, batch.x.size(-1))
        out[flat] = batch.x
        return out.view(B, T, N, -1)
