r"""CTL: spatial-temporal correlation and topology learning for video re-ID.

Liu, Zha, Wu, Zhang, Wang and Wu, "Spatial-Temporal Correlation and Topology
Learning for Person Re-Identification in Videos", CVPR 2021.
https://openaccess.thecvf.com/content/CVPR2021/html/Liu_Spatial-Temporal_Correlation_and_Topology_Learning_for_Person_Re-Identification_in_Videos_CVPR_2021_paper.html

Pipeline (fig. 2): backbone feature maps :math:`F` and keypoint heatmaps ->
part features at three scales and the global feature (eq. 1,
:class:`~stgraph.graph.KeypointGraphBuilder`) -> :math:`L` 3D graph
convolutions per scale on the context-reinforced topology (eq. 2-4,
:class:`~stgraph.nn.DenseSlidingWindowGCN`) -> cross-scale graph
convolutions from the fine scales to the coarsest (eq. 5-7,
:class:`~stgraph.nn.DenseCrossScaleGCN`) -> fusion block (sec. 3.5) -> three
features trained with cross-entropy and batch-hard triplet losses, plus the
diversity loss of eq. (8) on the part features.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stgraph.graph import COCO17, KeypointGraphBuilder, Skeleton, keypoint_heatmaps, prior_pose
from stgraph.models.base import (
    ReIDOutput,
    VideoReIDModel,
    check_positive,
    scale_gradient,
)
from stgraph.models.registry import register_model
from stgraph.nn import (
    BNNeck,
    CrossScaleGCN,
    DenseCrossScaleGCN,
    DenseSlidingWindowGCN,
    SlidingWindowGCN,
)

__all__ = ["CTL", "cross_scale_pooling", "scale_gradient"]

#: Backends of the graph layers; "dense" is the old name of "auto".
_BACKENDS = ("auto", "torch", "triton", "pyg", "dense")
_CROSS_SCALE = ("gcn", "add")
_PART_REDUCE = ("sum", "mean")
#: What CTL ranks: its branches' post-BNNeck features, by name.
_EMBEDDINGS = {"aggregate": (1,), "concat": (2,), "all": (0, 1, 2)}


def cross_scale_pooling(skeleton: Skeleton, fine: str, coarse: str) -> Tensor:
    r"""Fixed fine-to-coarse pooling, the "addition" that replaces CS-GCL in CTL's ablation.

    :math:`M_{mi} \propto |P_m \cap Q_i|`, the number of keypoints coarse part
    :math:`P_m` shares with fine node :math:`Q_i`, each row normalised to sum
    to 1, so :math:`M X_{fine}` averages the fine nodes overlapping each coarse
    part (weighted by the overlap). From the keypoints (``fine="s1"``) it is
    the coarse scale's :meth:`~stgraph.graph.Skeleton.group_matrix`. The paper's
    "Basel+ContRe+3D" (Table 3) says only "addition"; this weighting is ours.

    Args:
        skeleton (Skeleton): the scales' definitions.
        fine (str): fine scale, e.g. ``"s2"``.
        coarse (str): coarse scale, e.g. ``"s3"``.

    Returns:
        Tensor :math:`(N_{coarse}, N_{fine})`, rows summing to 1.

    Raises:
        ValueError: an unknown scale, or a coarse part sharing no keypoint with
            any fine node.

    Examples:
        >>> m = cross_scale_pooling(COCO17, "s2", "s3")
        >>> m.shape, bool(torch.allclose(m.sum(1), torch.ones(5)))
        (torch.Size([5, 10]), True)
    """
    m_f = (skeleton.group_matrix(fine, dtype=torch.float64) > 0).to(torch.float64)
    m_c = (skeleton.group_matrix(coarse, dtype=torch.float64) > 0).to(torch.float64)
    overlap = m_c @ m_f.t()  # (N_c, N_f) shared keypoints
    rows = overlap.sum(dim=1, keepdim=True)
    if bool((rows == 0).any()):
        raise ValueError(f"a part of scale {coarse!r} shares no keypoint with scale {fine!r}")
    return (overlap / rows).to(torch.float32)


@register_model("ctl")
class CTL(VideoReIDModel):
    r"""CTL (Liu et al., CVPR 2021): multi-scale keypoint graphs, 3D-GCL, CS-GCL, fusion.

    Per clip, with :math:`V_g` the per-frame global feature (GAP) and
    :math:`\hat{X}_s` the part features of scale :math:`s` after ``num_layers``
    3D-GCLs:

    .. math::
        V_p = \hat{X}_{s_3} + \alpha \big(\hat{X}_{s_{13}} + \hat{X}_{s_{23}}\big)
        \quad \text{(eq. 7)}

    .. math::
        V_f^g = \mathrm{TAP}(V_g), \quad
        V_f^a = \mathrm{TAP}\Big(\sum_n [V_p]_{:,n} + V_g\Big), \quad
        V_f^c = \mathrm{TAP}\big([g_c([V_p]_{:,1}), \dots, g_c([V_p]_{:,N_{s_3}})] + V_g\big)

    (sec. 3.5; with ``part_reduce="mean"`` :math:`V_f^a` takes the mean over
    the :math:`N_{s_3}` parts instead of the sum, and with
    ``normalize_parts`` each part :math:`[V_p]_{:,n}` entering the fusion is
    rescaled to the norm of :math:`V_g`), each with a BNNeck and classifier;
    ``part_features`` is :math:`\mathrm{TAP}(V_p)` (eq. 7, before any
    rescaling) for the diversity loss of eq. (8)
    (:func:`~stgraph.losses.diversity_loss`, added by
    :class:`~stgraph.losses.ReIDLoss`). The retrieval embedding is, by
    default, the three post-BNNeck features concatenated (``embedding="all"``,
    ours); ``embedding="aggregate"`` ranks :math:`V_f^a`, the paper's inference
    feature. Training is the same whatever is ranked.

    Keypoints come with the clips (``keypoints`` in image pixels, as
    :class:`~stgraph.data.TrainClipDataset` with ``keypoints=True`` gives
    them), or as ready heatmaps on the feature grid, or not at all: then
    every frame uses the prior pose (:func:`~stgraph.graph.prior_pose`).
    Heatmaps are drawn by :func:`~stgraph.graph.keypoint_heatmaps`.

    Choices where the paper is silent (ours, see ``docs/ctl_choices.md``):
    all graph layers keep the backbone width :math:`C`; the first 3D-GCL of
    each scale has no shortcut, the later ones do (sec. 3.3, :math:`1 \le l
    \le L - 1`); :math:`g_c` is one linear map :math:`C \to \lceil C /
    N_{s_3} \rceil` shared by the parts, their concatenation cut to :math:`C`
    channels (:math:`C` is rarely divisible by 5); the diversity loss is on
    TAP(:math:`V_p`) with each part L2-normalised, averaged over clips.

    Departures from the paper, each one constructor argument whose paper-literal
    value is given below (ours, found by a review of this implementation; see
    ``docs/ctl_choices.md`` items 20-24): sharper heatmaps
    (``heatmap_temperature=0.1``, paper 1) and the scaled dot product in the
    CS-GCLs (``scale_cross_attention``, paper off) are on by default; selectable
    and off by default are the mean over the parts in :math:`V_f^a`
    (``part_reduce="mean"``, paper ``"sum"``), the gradient of the part branch
    into the backbone scaled (``part_grad_scale``, paper 1) and
    parts rescaled to the global feature's norm (``normalize_parts``, paper
    off). The paper-literal model is ``CTL(..., heatmap_temperature=1.0,
    part_reduce="sum", part_grad_scale=1.0, normalize_parts=False,
    scale_cross_attention=False)``.

    Args:
        num_classes (int): number of training identities.
        backbone (str): ``"resnet18" | "resnet34" | "resnet50"``. (default: ``"resnet50"``)
        last_stride (int): backbone's last stride. (default: :obj:`1`, as the paper)
        pretrained (str, optional): local path of torchvision ImageNet weights.
        skeleton (Skeleton): keypoints and the two part scales; the last scale
            is the coarse one :math:`s_3`. (default: :data:`~stgraph.graph.COCO17`)
        num_layers (int): 3D-GCLs :math:`L` per scale; 0 keeps the pooled part
            features (the paper's "Basel"). (default: :obj:`2`)
        tau (int): temporal window :math:`\tau`; 1 gives the frame-wise GCN
            ("Basel+ContRe"). (default: :obj:`3`)
        alpha (float): weight :math:`\alpha` of the cross-scale features, eq. (7).
            (default: :obj:`0.3`)
        use_physical, use_mask, use_context (bool): the terms :math:`A^p`,
            :math:`A^m`, :math:`A^c` of the topology, eq. (2) (Table 4).
            (default: all :obj:`True`)
        cross_scales (sequence of str): fine scales propagated to the coarse
            one (Table 5); empty for :math:`V_p = \hat{X}_{s_3}`.
            (default: ``("s1", "s2")``)
        cross_scale (str): ``"gcn"`` (CS-GCL, eq. 5-6) or ``"add"`` (a fixed
            average, :func:`cross_scale_pooling`: the "Basel+ContRe+3D"
            ablation). (default: ``"gcn"``)
        cross_embed_channels (int, optional): embedding width of the CS-GCLs;
            default :math:`C / 8`.
        heatmap_sigma (float): Gaussian sigma of the heatmaps, in feature
            cells. (default: :obj:`1.0`)
        heatmap_temperature (float): softmax temperature :math:`\tau` of the
            heatmaps. The paper's plain softmax (:math:`\tau = 1`) of maps with
            values in :math:`[0, 1]` is nearly uniform over the cells, so every
            part feature is nearly :math:`V_g` (cosine 0.999); 0.1 is HOReID's
            factor 10 before the softmax (ours). (default: :obj:`0.1`)
        part_reduce (str): how :math:`V_f^a` combines the :math:`N_{s_3}`
            parts: ``"sum"`` (the paper's :math:`\sum_n`) or ``"mean"`` (ours:
            1/5 of the part term, so that it does not swamp :math:`V_g` nor
            its gradient). Under the frozen protocol the sum ranks better
            (``docs/ctl_choices.md`` item 21). (default: ``"sum"``)
        part_grad_scale (float): factor on the gradient the part branch (all
            that is computed from the pooled part features, not :math:`V_g`)
            sends into the backbone feature maps; the forward pass is
            unchanged (:func:`scale_gradient`). 1 is the paper's plain
            backpropagation, 0 detaches the part branch from the backbone.
            (default: :obj:`0.0`, ours: under the partial protocol, at
            initialisation, the gradient :math:`V_f^a` sends into the trained
            tail is 116x the global branch's, nearly orthogonal to it; with 0
            the global branch ranks 27.0 % rank-1 on cuhk03-pair1 instead of
            18.5 %, and the embedding 35.0 % instead of 29.5 %, 2 seeds)
        normalize_parts (bool): rescale each part of :math:`V_p` entering the
            fusion (both :math:`V_f^a` and :math:`V_f^c`) to the norm of the
            frame's :math:`V_g`, :math:`[V_p]_{:,n} \, \|V_g\| / \|[V_p]_{:,n}\|`,
            with :math:`\|V_g\|` a constant in backpropagation (so the part
            branch sends no gradient through :math:`V_g`). Ours; the paper
            adds :math:`V_p` as it is. (default: :obj:`False`)
        scale_cross_attention (bool): divide :math:`\mathbf{r}_m^\top
            \mathbf{r}_i` by :math:`\sqrt{d}` in the CS-GCL attention (eq. 5;
            ``scale_attention`` of :class:`~stgraph.nn.DenseCrossScaleGCN`).
            Ours; the paper's product is unscaled (:obj:`False`), which is
            near one-hot at initialisation. (default: :obj:`True`)
        backend (str): the dense layers with ``"auto"`` (the fused Triton
            kernel of the 3D-GCLs for CUDA tensors when Triton is installed,
            batched matmuls otherwise), ``"torch"`` (batched matmuls) or
            ``"triton"`` (the fused kernel; see
            :func:`~stgraph.kernels.resolve_backend`), or ``"pyg"`` (the
            ``MessagePassing`` twins); ``"dense"`` is an alias of ``"auto"``.
            Same parameters, same numbers; the CS-GCLs have no kernel (batched
            matmuls for all but ``"pyg"``). (default: ``"auto"``)
        embedding (str): the feature ranked at test time, after its BNNeck:
            ``"aggregate"`` (:math:`V_f^a`, the paper's inference feature), ``"concat"``
            (:math:`V_f^c`) or ``"all"`` (the three concatenated, as STGCN ranks its
            branches). Training is the same for all three. (default: ``"all"``, ours:
            on cuhk03-pair1, partial protocol, 35.0 % rank-1 against 29.0 % for
            :math:`V_f^a`, 2 seeds, docs/results.md)

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`; optional ``keypoints``
          :math:`(B, T, K, 3)` rows ``(x, y, score)`` in pixels of the
          :math:`H \times W` frames, or ``heatmaps`` :math:`(B, T, K, h, w)`
          on the feature grid, normalised over its cells
        - **output:** dict with ``embedding`` :math:`(B, 3C)` (``"all"``; :math:`(B, C)`
          with ``embedding="aggregate"`` or ``"concat"``),
          branches ``("global", "aggregate", "concat")`` and ``part_features``
          :math:`(B, N_{s_3}, C)`

    Raises:
        ValueError: an unknown ``backend`` / ``cross_scale`` / ``part_reduce`` /
            ``embedding`` / scale, a skeleton without two part scales, ``num_layers < 0``, a
            non-positive ``heatmap_temperature``, a negative
            ``part_grad_scale``, or keypoints /
            heatmaps of the wrong shape or with NaN (the message names the
            shape expected).
    """

    #: Extra batch entries :meth:`forward` accepts, passed by the engine when present.
    input_keys = ("keypoints",)

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, skeleton: Skeleton = COCO17,
                 num_layers: int = 2, tau: int = 3, alpha: float = 0.3,
                 use_physical: bool = True, use_mask: bool = True, use_context: bool = True,
                 cross_scales: Sequence[str] = ("s1", "s2"), cross_scale: str = "gcn",
                 cross_embed_channels: int | None = None, heatmap_sigma: float = 1.0,
                 heatmap_temperature: float = 0.1, part_reduce: str = "sum",
                 part_grad_scale: float = 0.0, normalize_parts: bool = False,
                 scale_cross_attention: bool = True, backend: str = "auto",
                 embedding: str = "all") -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(_BACKENDS)}")
        if cross_scale not in _CROSS_SCALE:
            raise ValueError(f"unknown cross_scale {cross_scale!r}; "
                             f"choose one of: {', '.join(_CROSS_SCALE)}")
        if part_reduce not in _PART_REDUCE:
            raise ValueError(f"unknown part_reduce {part_reduce!r}; "
                             f"choose one of: {', '.join(_PART_REDUCE)}")
        if embedding not in _EMBEDDINGS:
            raise ValueError(f"unknown embedding {embedding!r}; "
                             f"choose one of: {', '.join(_EMBEDDINGS)}")
        if not heatmap_temperature > 0:
            raise ValueError(f"heatmap_temperature must be > 0, got {heatmap_temperature} "
                             "(1 is the paper's softmax, lower sharpens)")
        if not part_grad_scale >= 0 or part_grad_scale == float("inf"):
            raise ValueError(f"part_grad_scale must be finite and >= 0, got {part_grad_scale} "
                             "(1: plain backpropagation, 0: part branch detached)")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"num_layers must be an integer >= 0, got {num_layers!r}")
        check_positive(tau=tau, cross_embed_channels=cross_embed_channels)
        if not 0 <= alpha < float("inf"):
            raise ValueError(f"alpha must be finite and >= 0 (the weight of the cross-scale "
                             f"features, eq. 7), got {alpha}")
        if not 0 < heatmap_sigma < float("inf"):
            raise ValueError(f"heatmap_sigma must be finite and > 0 (pixels of the feature "
                             f"map), got {heatmap_sigma}")
        if len(skeleton.scales) != 3:
            raise ValueError(f"CTL needs a skeleton with keypoints and two part scales, "
                             f"got scales {skeleton.scales}")
        cross_scales = tuple(cross_scales)
        fine_scales = skeleton.scales[:-1]
        bad = [s for s in cross_scales if s not in fine_scales]
        if bad or len(set(cross_scales)) != len(cross_scales):
            raise ValueError(f"cross_scales must be distinct fine scales among {fine_scales}, "
                             f"got {cross_scales}")
        super().__init__(num_classes, backbone, last_stride, pretrained)
        C = self.feat_channels
        self.skeleton = skeleton
        self.builder = KeypointGraphBuilder(skeleton)
        self.coarse = skeleton.scales[-1]
        self.cross_scales = cross_scales
        self.cross_scale = cross_scale
        self.alpha = float(alpha)
        if backend == "dense":
            backend = "auto"
        self.backend = backend
        self.heatmap_sigma = float(heatmap_sigma)
        self.heatmap_temperature = float(heatmap_temperature)
        self.part_reduce = part_reduce
        self.embedding = embedding
        self.part_grad_scale = float(part_grad_scale)
        self.normalize_parts = bool(normalize_parts)
        self.scale_cross_attention = bool(scale_cross_attention)

        dense = backend != "pyg"
        gcl = (functools.partial(DenseSlidingWindowGCN, backend=backend) if dense
               else SlidingWindowGCN)
        self.gcls = nn.ModuleDict({
            s: nn.ModuleList([
                gcl(C, C, skeleton.physical_adjacency(s), tau=tau, use_physical=use_physical,
                    use_mask=use_mask, use_context=use_context, residual=layer > 0)
                for layer in range(num_layers)
            ])
            for s in (*cross_scales, self.coarse)
        })
        if cross_scale == "gcn":
            cs = DenseCrossScaleGCN if dense else CrossScaleGCN
            self.cs_gcls = nn.ModuleDict({
                s: cs(C, C, cross_embed_channels, scale_attention=scale_cross_attention)
                for s in cross_scales
            })
        else:
            self.cs_gcls = nn.ModuleDict()
            for s in cross_scales:
                self.register_buffer(f"pool_{s}", cross_scale_pooling(skeleton, s, self.coarse))
        n_coarse = skeleton.num_nodes(self.coarse)
        self.part_channels = -(-C // n_coarse)  # ceil(C / N_s3)
        self.g_c = nn.Linear(C, self.part_channels)
        self.necks = nn.ModuleList([BNNeck(C, num_classes) for _ in range(3)])

    def heatmaps(self, keypoints: Tensor | None, batch: int, frames: int,
                 image_size: tuple[int, int], feature_size: tuple[int, int],
                 device: torch.device, dtype: torch.dtype) -> Tensor:
        """Keypoint heatmaps on the feature grid (CTL sec. 3.1, eq. 1).

        Args:
            keypoints (Tensor, optional): ``(B, T, K, 3)`` rows ``(x, y, score)`` in pixels
                of the ``image_size`` frames; :obj:`None` uses the prior pose
                (:func:`~stgraph.graph.prior_pose`) for every frame.
            batch, frames (int): :math:`B`, :math:`T`.
            image_size ((int, int)): frame height and width in pixels.
            feature_size ((int, int)): feature-map height and width :math:`(h, w)`.

        Returns:
            Tensor ``(B, T, K, h, w)``, each map summing to 1 over its cells
            (:func:`~stgraph.graph.keypoint_heatmaps`, sigma ``heatmap_sigma`` cells).

        Raises:
            ValueError: keypoints of another shape, NaN keypoints, or no keypoints for a
                skeleton other than the 17 COCO keypoints.
        """
        K = self.skeleton.num_keypoints
        if keypoints is None:
            if K != 17:
                raise ValueError(f"the prior pose has the 17 COCO keypoints, skeleton "
                                 f"{self.skeleton.name!r} has {K}: pass keypoints")
            pose = torch.from_numpy(prior_pose(*image_size)).to(device=device, dtype=dtype)
            keypoints = pose.expand(batch, frames, K, 3)
        elif keypoints.shape != (batch, frames, K, 3):
            raise ValueError(f"expected keypoints of shape {(batch, frames, K, 3)} = "
                             f"(B, T, K, 3) for clips of {batch} x {frames} frames and the "
                             f"{K} keypoints of skeleton {self.skeleton.name!r}, "
                             f"got {tuple(keypoints.shape)}")
        return keypoint_heatmaps(keypoints.to(device=device, dtype=dtype), image_size,
                                 feature_size, sigma=self.heatmap_sigma,
                                 temperature=self.heatmap_temperature)

    def forward(self, clips: Tensor, keypoints: Tensor | None = None,
                heatmaps: Tensor | None = None) -> ReIDOutput:
        """See the class docstring."""
        if keypoints is not None and heatmaps is not None:
            raise ValueError("pass keypoints or heatmaps, not both")
        fmap = self.forward_features(clips)  # (B, T, C, h, w)
        B, T = clips.shape[:2]
        if heatmaps is None:
            heatmaps = self.heatmaps(keypoints, B, T, tuple(clips.shape[-2:]),
                                     tuple(fmap.shape[-2:]), fmap.device, fmap.dtype)
        return self.forward_head(fmap, heatmaps)

    def forward_head(self, feature_maps: Tensor, heatmaps: Tensor) -> ReIDOutput:
        """The head on backbone maps ``(B, T, C, h, w)`` and heatmaps ``(B, T, K, h, w)``.

        The entry point for training the head on cached backbone maps, with
        heatmaps from :meth:`heatmaps`.
        """
        # the part branch pools maps whose gradient is scaled; V_g uses the maps as they are
        feats = self.builder(scale_gradient(feature_maps, self.part_grad_scale), heatmaps)
        x = {}
        for s, layers in self.gcls.items():
            h = feats[s]  # (B, T, N_s, C)
            for layer in layers:
                h = layer(h)
            x[s] = h
        v_p = x[self.coarse]  # (B, T, N_s3, C)
        if self.cross_scales:
            if self.cross_scale == "gcn":
                cross = [self.cs_gcls[s](x[s], v_p) for s in self.cross_scales]
            else:
                cross = [torch.einsum("mi,btic->btmc", getattr(self, f"pool_{s}"), x[s])
                         for s in self.cross_scales]
            v_p = v_p + self.alpha * torch.stack(cross).sum(dim=0)  # eq. (7)
        v_g = feature_maps.mean(dim=(-2, -1))  # (B, T, C), GAP of the unscaled maps
        C = v_g.size(-1)
        parts = v_p  # (B, T, N_s3, C), the parts entering the fusion
        if self.normalize_parts:  # each part at the norm of V_g, a constant for backprop
            parts = F.normalize(v_p, dim=-1) * v_g.detach().norm(dim=-1, keepdim=True)[:, :, None]
        f_g = v_g.mean(dim=1)
        reduced = parts.sum(dim=2) if self.part_reduce == "sum" else parts.mean(dim=2)
        f_a = (reduced + v_g).mean(dim=1)
        f_c = (self.g_c(parts).flatten(2)[..., :C] + v_g).mean(dim=1)
        out = self._output(("global", "aggregate", "concat"), [f_g, f_a, f_c], self.necks,
                           embed=_EMBEDDINGS[self.embedding])
        out["part_features"] = v_p.mean(dim=1)  # (B, N_s3, C): TAP(V_p) for eq. (8)
        return out
