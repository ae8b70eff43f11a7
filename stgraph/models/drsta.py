r"""DRSTA: diversity regularized spatiotemporal attention for video re-ID.

Li, Bak, Carr and Wang, "Diversity Regularized Spatiotemporal Attention for
Video-based Person Re-identification", CVPR 2018.
https://openaccess.thecvf.com/content_cvpr_2018/html/Li_Diversity_Regularized_Spatiotemporal_CVPR_2018_paper.html

Pipeline: backbone feature maps of the :math:`N` frames -> :math:`K` spatial
attention models per frame (:class:`~stgraph.nn.MultiPartSpatialAttention`),
kept apart by the Hellinger diversity term
(:func:`~stgraph.nn.hellinger_diversity`) -> per-part temporal attention over
the frames (:class:`~stgraph.nn.PartTemporalAttention`) -> the :math:`K`
attended parts concatenated -> BNNeck.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stgraph.models.base import ReIDOutput, VideoReIDModel, check_positive
from stgraph.models.registry import register_model
from stgraph.nn import BNNeck, MultiPartSpatialAttention, PartTemporalAttention, hellinger_diversity

__all__ = ["DRSTA"]

_DIVERSITY_FORMS = ("paper", "code")


@register_model("drsta")
class DRSTA(VideoReIDModel):
    r"""DRSTA (Li et al., CVPR 2018): K spatial attentions, per-part temporal attention.

    For the backbone map of frame :math:`n` with cells
    :math:`\mathbf{x}_{n,l} \in \mathbb{R}^C`, :math:`l = 1..L`:

    .. math::
        s_{n,k,l} = \operatorname{softmax}_l\Big(\mathbf{w}'^{\top}_k
        \mathrm{ReLU}(W_k \mathbf{x}_{n,l} + \mathbf{b}_k)\Big), \qquad
        \mathbf{x}_{n,k} = \sum_l s_{n,k,l}\, \mathbf{x}_{n,l}

    .. math::
        t_{n,k} = \operatorname{softmax}_n\big(\mathbf{w}_k^{\top} \mathbf{x}_{n,k}\big), \qquad
        \mathbf{x}_k = \sum_n t_{n,k}\, \mathbf{x}_{n,k}, \qquad
        \mathbf{f} = [\mathbf{x}_1; \dots; \mathbf{x}_K]

    :math:`\mathbf{f}` goes through a BNNeck (one branch, ``"parts"``), trained
    with the cross-entropy and batch-hard triplet losses of
    :class:`~stgraph.losses.ReIDLoss`; the diversity term

    .. math::
        \lambda R, \qquad R = \frac{1}{BN} \sum_{b,n}
        \big\lVert Q_{b,n} Q_{b,n}^{\top} - I \big\rVert_F^2, \quad
        Q_{b,n} = \sqrt{S_{b,n}} \in \mathbb{R}^{K \times L}

    comes out already weighted in ``outputs["regularizers"]["drsta_div"]``,
    which :class:`~stgraph.losses.ReIDLoss` adds to the loss and logs.

    Choices where the paper is silent or that differ from it (ours): the
    losses (the paper trains with OIM; we use the toolkit's CE + batch-hard
    triplet with a BNNeck, like every other model), :math:`\lambda =`
    ``diversity_weight`` :math:`= 0.1` (the paper gives no value; :math:`R`
    starts near its maximum :math:`K(K-1) = 30` for near-uniform maps, so 0.1
    starts it at about 3, the size of the other terms), :math:`R` averaged over
    frames and clips, ``num_parts`` :math:`K = 6` (the paper's figures show 6
    models; the authors' partial code uses 3), ``hidden_channels``
    :math:`d = 64` (the authors' code's width), one temporal weight vector per
    part without bias, and the optional per-part linear reduction
    ``part_channels``. The paper's ResNet-50 maps are :math:`8 \times 4`
    (:math:`L = 32`) for :math:`256 \times 128` frames, i.e.
    ``last_stride=2``; the default ``last_stride=1`` (as every stgraph model)
    gives :math:`16 \times 8` maps. The restricted random sampling of the
    frames is the data loader's (:func:`~stgraph.data.make_train_loader`).

    What the authors' partial code does, and where we differ from it (code:
    https://github.com/ShuangLI59/Diversity-Regularized-Spatiotemporal-Attention):

    * its regulariser (``trainers.py``) is
      :math:`\sqrt{\sum_{b,n} \lVert Q_{b,n} Q_{b,n}^\top - I \rVert_F^2 + 10^{-5}}`,
      the square root of the sum over every frame of the batch (a norm, not
      squared, and growing with the batch), added to the loss with weight 1.
      Ours by default (``diversity_form="paper"``) is the mean of the squared
      norms, :math:`\lambda R` above; ``diversity_form="code"`` gives the code's
      form, :math:`\lambda \sqrt{\sum_{b,n} R_{b,n} + 10^{-5}}` (pass
      ``diversity_weight=1`` for the code's weight as well);
    * its part features go through one shared ``Linear(2048, 128)`` and are
      L2-normalised per part; our ``part_channels`` is one linear layer per part
      (not shared) without normalisation, and :obj:`None` (no layer) by default;
    * its spatial layer is ``shared_attention=True`` (see
      :class:`~stgraph.nn.MultiPartSpatialAttention`).

    Args:
        num_classes (int): number of training identities.
        backbone (str): a registered backbone name. (default: ``"resnet50"``)
        last_stride (int): backbone's last stride. (default: :obj:`1`)
        pretrained (str, optional): ImageNet weights of the backbone, see
            :class:`~stgraph.models.base.VideoReIDModel`.
        num_parts (int): spatial attention models :math:`K`. (default: :obj:`6`)
        hidden_channels (int): hidden width :math:`d` of each spatial attention
            model. (default: :obj:`64`)
        shared_attention (bool): the authors' shared spatial attention (one 1x1
            convolution :math:`C \to d` + BN + ReLU, then 1x1 :math:`d \to K` +
            BN, the last a learned per-part temperature) instead of the paper's
            :math:`K` separate models, see
            :class:`~stgraph.nn.MultiPartSpatialAttention`. (default: :obj:`False`)
        part_channels (int, optional): if set, each attended part
            :math:`\mathbf{x}_k` is mapped by its own linear layer
            :math:`C \to` ``part_channels`` before the concatenation, so the
            embedding is :math:`K \cdot` ``part_channels`` wide instead of
            :math:`K C` (ours; :obj:`None` is the paper's plain
            concatenation). (default: :obj:`None`)
        diversity_weight (float): :math:`\lambda \ge 0`. (default: :obj:`0.1`)
        diversity_form (str): ``"paper"``, :math:`\lambda` times the mean of
            :math:`R_{b,n}` over the frames, or ``"code"``, :math:`\lambda
            \sqrt{\sum_{b,n} R_{b,n} + 10^{-5}}` as the authors' ``trainers.py``.
            (default: ``"paper"``)

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`
        - **output:** dict with ``embedding`` :math:`(B, K D)` (:math:`D = C` or
          ``part_channels``), one branch ``"parts"`` and ``regularizers``
          ``{"drsta_div": scalar}``, in train and eval mode

    Raises:
        ValueError: ``num_parts`` / ``hidden_channels`` / ``part_channels`` below 1,
            a negative ``diversity_weight``, an unknown ``diversity_form``, or
            feature maps that are not :math:`(B, T, C, h, w)` with the backbone's
            :math:`C`.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, num_parts: int = 6, hidden_channels: int = 64,
                 shared_attention: bool = False, part_channels: int | None = None,
                 diversity_weight: float = 0.1, diversity_form: str = "paper") -> None:
        check_positive(num_parts=num_parts, hidden_channels=hidden_channels,
                       part_channels=part_channels)
        if not 0 <= diversity_weight < float("inf"):
            raise ValueError(f"diversity_weight must be finite and >= 0, got {diversity_weight}")
        if diversity_form not in _DIVERSITY_FORMS:
            raise ValueError(f"unknown diversity_form {diversity_form!r}; choose one of: "
                             f"{', '.join(_DIVERSITY_FORMS)}")
        super().__init__(num_classes, backbone, last_stride, pretrained)
        C, K = self.feat_channels, num_parts
        self.num_parts = num_parts
        self.hidden_channels = hidden_channels
        self.shared_attention = bool(shared_attention)
        self.part_channels = part_channels
        self.diversity_weight = float(diversity_weight)
        self.diversity_form = diversity_form
        self.spatial = MultiPartSpatialAttention(C, K, hidden_channels, shared=shared_attention)
        self.temporal = PartTemporalAttention(C, K)
        if part_channels is not None:
            # a linear layer per part, all K as one grouped 1x1 convolution
            self.reduce = nn.Conv1d(K * C, K * part_channels, 1, groups=K)
            D = part_channels
        else:
            self.register_module("reduce", None)
            D = C
        self.embed_channels = K * D
        self.necks = nn.ModuleList([BNNeck(K * D, num_classes)])

    def _check(self, feature_maps: Tensor) -> None:
        if feature_maps.dim() != 5 or feature_maps.size(2) != self.feat_channels:
            raise ValueError(f"expected feature maps of shape (B, T, {self.feat_channels}, h, w) "
                             f"(the backbone's C), got {tuple(feature_maps.shape)}")

    def attention_head(self, feature_maps: Tensor) -> dict:
        """Spatial and temporal attention of backbone maps ``(B, T, C, h, w)``.

        Returns:
            dict: ``"spatial"`` :math:`(B, T, K, h, w)`, each map summing to 1 over its
            cells; ``"temporal"`` :math:`(B, T, K)`, each part's weights summing to 1
            over the frames; ``"parts"`` :math:`(B, T, K, C)` the attended part features
            of every frame.

        Raises:
            ValueError: feature maps that are not :math:`(B, T, C, h, w)` with the
                backbone's :math:`C`.
        """
        self._check(feature_maps)
        parts, spatial = self.spatial(feature_maps)  # (B, T, K, C), (B, T, K, h, w)
        _, temporal = self.temporal(parts)  # (B, T, K)
        return {"spatial": spatial, "temporal": temporal, "parts": parts}

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        """The head on backbone maps ``(B, T, C, h, w)``; see the class docstring."""
        self._check(feature_maps)
        parts, spatial = self.spatial(feature_maps)  # (B, T, K, C), (B, T, K, h, w)
        clip, _ = self.temporal(parts)  # (B, K, C)
        B = clip.size(0)
        if self.reduce is not None:
            clip = self.reduce(clip.reshape(B, -1, 1))  # (B, K D, 1)
        f = clip.reshape(B, -1)  # (B, K D): the K parts concatenated
        out = self._output(("parts",), [f], self.necks)
        if self.diversity_form == "paper":
            div = hellinger_diversity(spatial.flatten(-2))  # mean over the B T frames
        else:  # the authors' trainers.py: sqrt of the sum over the B T frames
            div = torch.sqrt(hellinger_diversity(spatial.flatten(-2), reduction="sum") + 1e-5)
        out["regularizers"] = {"drsta_div": self.diversity_weight * div}
        return out
