r"""STA: parameter-free spatial-temporal attention over frames and horizontal blocks.

Fu, Wang, Wei and Huang, "STA: Spatial-Temporal Attention for Large-Scale Video-based
Person Re-Identification", AAAI 2019 (arXiv:1811.04129).

Pipeline (fig. 1 of the paper): backbone feature maps of the clip's frames ->
spatial-temporal attention (:class:`~stgraph.nn.SpatialTemporalAttention`: the score
matrix :math:`S`, the discriminative and the global map) -> the two maps concatenated
on channels -> GAP -> FC -> BNNeck; cross-entropy and batch-hard triplet losses plus the
inter-frame regularisation (:func:`~stgraph.nn.inter_frame_regularization`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stgraph.models.base import ReIDOutput, VideoReIDModel, check_positive
from stgraph.models.registry import register_model
from stgraph.nn import BNNeck
from stgraph.nn.sta import (
    SpatialTemporalAttention,
    inter_frame_regularization,
    sta_row_blocks,
)

__all__ = ["STA"]


@register_model("sta")
class STA(VideoReIDModel):
    r"""STA (Fu et al., AAAI 2019): discriminative + global clip maps from a 2-D score
    matrix over frames and blocks, with an inter-frame regulariser.

    With :math:`X_1` (discriminative) and :math:`X_2` (global) the clip maps of
    :class:`~stgraph.nn.SpatialTemporalAttention` on the backbone maps
    :math:`f_1, \dots, f_T`:

    .. math::
        x = \mathrm{GAP}\big([X_1; X_2]\big) \in \mathbb{R}^{2C}, \qquad
        v = W x + b \in \mathbb{R}^{D}

    :math:`v` feeds the triplet loss and a BNNeck (cross-entropy on its logits;
    the BNNeck's normalised :math:`v` is the retrieval embedding). The
    inter-frame regularisation :math:`\lambda \lVert g_i - g_j \rVert_F`
    (:func:`~stgraph.nn.inter_frame_regularization`, averaged over the clips) is
    returned as ``outputs["regularizers"]["sta_reg"]``, already weighted, which
    :class:`~stgraph.losses.ReIDLoss` adds to the loss and logs; it is there in
    train and eval mode alike, and in float32 at least whatever the dtype of the
    maps (it is computed from :math:`g`, which is float32 for half-precision
    maps, and is not cast back).

    Choices (ours, the paper leaves them open or we do not follow the public
    re-implementation, see ``docs/models/sta.md``):

    * ``num_blocks`` :math:`K = 4`; :math:`K` need not divide the map height
      (near-equal blocks, :func:`~stgraph.nn.sta_row_blocks`), :math:`K > h`
      is an error.
    * ``embed_dim`` :math:`D`: the FC maps :math:`2C \to C` by default, the
      backbone width, so the embedding is as wide as TP's; PyTorch's default
      initialisation of the FC.
    * ``reg_weight`` :math:`\lambda = 1`: the regulariser is dimensionless, at
      most :math:`\sqrt 2`, and as a norm (not a squared norm) the gradient on
      the maps :math:`g` of one pair's term has unit length whatever its value
      (of the mean over pairs, length at most 1). Measured at
      initialisation (synthetic clips, 128 x 64, :math:`T = 4`), with
      :math:`\lambda = 1` it is 0.02 (random ResNet-18) to 0.15 (ImageNet
      EfficientNet-Lite0) against about 3.6 for cross-entropy + triplet, and its
      gradient into the backbone is 0.7 % to 5 % of theirs: a gentle pull of the
      frames' attention towards each other that does not override identity
      learning, yet is not negligible (0.1 would be). 0 switches it off.
    * ``reg_pairs="all"``: the mean over all frame pairs (the paper regularises
      "two frames of a clip" without saying which; this is the expectation over
      a uniformly drawn pair, deterministic, order-invariant); ``"first_last"``
      is the other choice.
    * The retrieval embedding is the BNNeck's output (BNNeck, Luo et al., CVPRW
      2019), not the paper's plain FC feature.

    Args:
        num_classes (int): number of training identities.
        backbone (str): a registered backbone name. (default: ``"resnet50"``, the paper's)
        last_stride (int): backbone's last stride. (default: :obj:`1`, as the paper)
        pretrained (str, optional): ``"imagenet"`` or a local state-dict path, see
            :class:`~stgraph.models.base.VideoReIDModel`.
        num_blocks (int): horizontal blocks :math:`K`. (default: :obj:`4`)
        embed_dim (int, optional): FC output width :math:`D`; :obj:`None` means the
            backbone width :math:`C`. (default: :obj:`None`)
        reg_weight (float): :math:`\lambda \ge 0`. (default: :obj:`1.0`)
        reg_pairs (str): frame pairs of the regulariser, ``"all"`` or
            ``"first_last"``. (default: ``"all"``)
        eps (float): :math:`\epsilon` of the spatial attention. (default: :obj:`1e-12`)

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`; the backbone maps need
          :math:`h \ge K` rows
        - **output:** dict with ``embedding`` :math:`(B, D)`, one branch ``"sta"``,
          and ``regularizers`` ``{"sta_reg": scalar}``

    Raises:
        ValueError: ``num_blocks < 1``, ``embed_dim < 1``, a negative or non-finite
            ``reg_weight``, an unknown ``reg_pairs``; at run time feature maps with
            fewer than ``num_blocks`` rows.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, num_blocks: int = 4,
                 embed_dim: int | None = None, reg_weight: float = 1.0,
                 reg_pairs: str = "all", eps: float = 1e-12) -> None:
        check_positive(num_blocks=num_blocks, embed_dim=embed_dim)
        if not 0 <= reg_weight < float("inf"):
            raise ValueError(f"reg_weight must be finite and >= 0, got {reg_weight}")
        if reg_pairs not in ("all", "first_last"):
            raise ValueError(f"unknown reg_pairs {reg_pairs!r}; choose one of: all, first_last")
        attention = SpatialTemporalAttention(num_blocks, eps=eps)  # checks num_blocks, eps
        super().__init__(num_classes, backbone, last_stride, pretrained)
        C = self.feat_channels
        self.embed_dim = C if embed_dim is None else int(embed_dim)
        self.reg_weight = float(reg_weight)
        self.reg_pairs = reg_pairs
        self.attention = attention
        self.fc = nn.Linear(2 * C, self.embed_dim)
        self.necks = nn.ModuleList([BNNeck(self.embed_dim, num_classes)])

    @property
    def num_blocks(self) -> int:
        """Horizontal blocks :math:`K` of the attention."""
        return self.attention.num_blocks

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        """The head on backbone maps ``(B, T, C, h, w)``; see the class docstring."""
        att = self.attention(feature_maps)
        x = torch.cat((att.discriminative, att.global_map), dim=1).mean(dim=(-2, -1))  # (B, 2C)
        v = self.fc(x)  # (B, D)
        out = self._output(("sta",), [v], self.necks)
        reg = inter_frame_regularization(att.spatial, pairs=self.reg_pairs,
                                         weight=self.reg_weight)
        out["regularizers"] = {"sta_reg": reg}  # float32 at least, as g (not v's dtype)
        return out

    def attention_head(self, feature_maps: Tensor) -> dict[str, Tensor]:
        """STA's attention on backbone maps ``(B, T, C, h, w)``, for plots.

        Gradients flow as in :meth:`forward`; call it under ``torch.no_grad()`` to look.

        Returns:
            dict with ``"spatial"`` :math:`g` as :math:`(B, T, 1, h, w)` (each map sums
            to 1), ``"temporal"`` the scores :math:`S` :math:`(B, T, K)` (each block's
            column sums to 1 over the frames), ``"frames"`` :math:`(B, K)` the frame
            each block of the discriminative map comes from, and ``"row_blocks"``
            :math:`(h,)` the block of every row.

        Raises:
            ValueError: feature maps that are not 5-D, have no frame / channel /
                cell, or fewer than ``num_blocks`` rows.
        """
        att = self.attention(feature_maps)
        h = feature_maps.size(-2)
        return {
            "spatial": att.spatial.unsqueeze(2),
            "temporal": att.scores,
            "frames": att.frames,
            "row_blocks": sta_row_blocks(h, self.num_blocks, device=feature_maps.device),
        }
