"""Temporal pooling with a residual per-frame MLP: a capacity control for the graph heads (ours).

STGCN and CTL add millions of parameters on top of the backbone. Whether their gain over
:class:`~stgraph.models.TemporalPooling` comes from the graphs or only from the added
capacity is told apart by a head with no graph and about as many parameters: this one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stgraph.models.base import ReIDOutput, VideoReIDModel
from stgraph.models.registry import register_model
from stgraph.models.stgcn import STGCN
from stgraph.nn import BNNeck

__all__ = ["TemporalPoolingMLP", "head_parameters"]


def head_parameters(model: nn.Module) -> int:
    """Number of trainable head parameters of a model.

    Counts the parameters with ``requires_grad`` outside ``model.backbone`` and outside
    the BNNeck classifiers (whose size depends only on ``num_classes`` and the branch
    widths, not on the head's capacity). The BNNecks' batch-norm weights are counted;
    their frozen shifts are not.

    Examples:
        >>> from stgraph.models import create_model
        >>> head_parameters(create_model("tp", num_classes=10, backbone="resnet18"))
        512
    """
    skip = {id(p) for m in model.modules() if isinstance(m, BNNeck)
            for p in m.classifier.parameters()}
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        skip.update(id(p) for p in backbone.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skip)


def _mlp_parameters(channels: int, hidden: int, num_layers: int) -> int:
    """Head parameters of :class:`TemporalPoolingMLP` (see :func:`head_parameters`)."""
    # per block: Linear(C, h) + BN(h) weight and bias + Linear(h, C); plus the BNNeck's weight
    return num_layers * (2 * channels * hidden + 3 * hidden + channels) + channels


@register_model("tp_mlp")
class TemporalPoolingMLP(VideoReIDModel):
    r"""TP with a residual MLP on every frame's feature: the capacity control of the graph heads.

    Ours, not from a paper. Per frame, the GAP feature :math:`x_t = \mathrm{GAP}(F_t)`
    passes ``num_layers`` residual blocks of width :math:`C`, then the clip is averaged
    over time and goes through a BNNeck, as in :class:`~stgraph.models.TemporalPooling`:

    .. math::
        x_t \leftarrow x_t + W_2\, \mathrm{Dropout}\big(\sigma(\mathrm{BN}(W_1 x_t + b_1))\big)
        + b_2, \qquad f = \frac{1}{T} \sum_t x_t \in \mathbb{R}^C

    with :math:`W_1 \in \mathbb{R}^{h \times C}`, :math:`W_2 \in \mathbb{R}^{C \times h}`,
    BN a batch norm over the :math:`B T` frames and :math:`\sigma` = LeakyReLU(0.1), as in
    :class:`~stgraph.models.STGCNBranch`. The MLP runs per frame, before the temporal mean,
    so it sees the per-frame features the graphs see; like TP the result does not depend
    on the order of the frames.

    The point is its size (see :func:`head_parameters`: trainable parameters outside the
    backbone and the classifiers). By default the width :math:`h` is chosen so that the
    head is as large as STGCN's with the same backbone and ``num_layers`` (STGCN's other
    defaults: ``seq_len=8``, ``num_patches=4``, ``spatial_channels=256``). Measured with
    ``num_layers=2``:

    ======================  =====  =====  ==========  =====  ==========  ==========
    backbone                C      TP     TP-MLP      h      STGCN       CTL
    ======================  =====  =====  ==========  =====  ==========  ==========
    ``resnet18``              512    512   1,581,062    769   1,580,544   2,821,225
    ``efficientnet_lite0``  1,280  1,280   8,666,780  1,690   8,664,576  15,779,074
    ``resnet50``            2,048  2,048  21,648,864  2,640  21,646,848  39,811,996
    ======================  =====  =====  ==========  =====  ==========  ==========

    To match another head, e.g. CTL's, pass
    ``hidden=TemporalPoolingMLP.match_parameters(head_parameters(ctl), C)``.

    ``zero_init=True`` zeroes :math:`W_2, b_2` of every block, so the untrained model
    *is* TP (same embedding for the same backbone weights) and training starts from the
    baseline; :math:`W_1`, :math:`b_1` and the blocks' BN then get no gradient on the
    first step, only from the second on. The default (``False``) initialises every
    linear map as PyTorch does, as STGCN's graph layers are initialised.

    Args:
        num_classes (int): number of training identities.
        backbone (str): backbone name, e.g. ``"resnet50"``. (default: ``"resnet50"``)
        last_stride (int): backbone's last stride. (default: :obj:`1`)
        pretrained (str, optional): local path of torchvision ImageNet weights.
        hidden (int, optional): hidden width :math:`h` of every block; :obj:`None`
            matches STGCN's head size (above). (default: :obj:`None`)
        num_layers (int): residual blocks; 0 gives TP. (default: :obj:`2`)
        dropout (float): dropout probability inside every block. (default: :obj:`0.0`)
        zero_init (bool): start as TP, see above. (default: :obj:`False`)

    Raises:
        ValueError: ``num_layers < 0``, ``hidden < 1``, ``dropout`` outside
            :math:`[0, 1)`, or feature maps of the wrong shape in :meth:`forward_head`.

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`, any :math:`T`
        - **output:** dict with ``embedding`` :math:`(B, C)`, one branch ``"global"``.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, hidden: int | None = None, num_layers: int = 2,
                 dropout: float = 0.0, zero_init: bool = False) -> None:
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if hidden is not None and hidden < 1:
            raise ValueError(f"hidden must be >= 1 (or None to match STGCN), got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(num_classes, backbone, last_stride, pretrained)
        C = self.feat_channels
        if hidden is None and num_layers > 0:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                stgcn = STGCN(1, backbone=backbone, num_layers=num_layers)
            hidden = self.match_parameters(head_parameters(stgcn), C, num_layers)
        self.hidden = hidden
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.zero_init = bool(zero_init)
        self.blocks = nn.ModuleList([
            nn.Sequential(
                nn.Linear(C, hidden),
                nn.BatchNorm1d(hidden),
                nn.LeakyReLU(0.1),
                nn.Dropout(dropout),
                nn.Linear(hidden, C),
            )
            for _ in range(num_layers)
        ])
        self.necks = nn.ModuleList([BNNeck(C, num_classes)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the head (not the backbone); see ``zero_init``."""
        for block in self.blocks:
            for layer in block:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            if self.zero_init:
                nn.init.zeros_(block[-1].weight)
                nn.init.zeros_(block[-1].bias)
        for neck in self.necks:
            neck.reset_parameters()

    @classmethod
    def match_parameters(cls, target: int, channels: int, num_layers: int = 2) -> int:
        r"""Hidden width whose head has the number of parameters closest to ``target``.

        Args:
            target (int): head parameters to match, as counted by :func:`head_parameters`.
            channels (int): backbone channels :math:`C`.
            num_layers (int): residual blocks. (default: :obj:`2`)

        Returns:
            int: :math:`h \ge 1`; the head then has ``target`` parameters up to half a
            width step, :math:`L (2C + 3) / 2`.

        Raises:
            ValueError: ``num_layers < 1`` (no width to choose), or a ``target`` below the
                head with :math:`h = 1`.

        Examples:
            >>> TemporalPoolingMLP.match_parameters(1_580_544, 512)
            769
        """
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 to match a parameter count, "
                             f"got {num_layers}")
        smallest = _mlp_parameters(channels, 1, num_layers)
        if target < smallest:
            raise ValueError(f"target of {target} head parameters is below the smallest "
                             f"head ({smallest}, hidden=1) for C={channels} and "
                             f"num_layers={num_layers}")
        per_width = num_layers * (2 * channels + 3)
        return max(1, round((target - _mlp_parameters(channels, 0, num_layers)) / per_width))

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        """The head on backbone maps ``(B, T, C, h, w)``."""
        if feature_maps.dim() != 5 or feature_maps.size(2) != self.feat_channels:
            raise ValueError(f"expected feature maps of shape (B, T, {self.feat_channels}, h, w), "
                             f"got {tuple(feature_maps.shape)}")
        B, T = feature_maps.shape[:2]
        x = feature_maps.mean(dim=(3, 4)).flatten(0, 1)  # (B*T, C): GAP per frame
        for block in self.blocks:
            x = x + block(x)  # BN over the B*T frames
        f = x.reshape(B, T, -1).mean(dim=1)  # (B, C): mean over the clip's frames
        return self._output(("global",), [f], self.necks)
