"""The per-branch re-ID objective: label-smoothed cross-entropy + batch-hard triplet
(+ the model's own terms: CTL's diversity loss when it outputs part features, a part
triplet loss on ``part_triplet_features``, and named ``regularizers``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stgraph.losses.cross_entropy import CrossEntropyLabelSmooth
from stgraph.losses.diversity import diversity_loss
from stgraph.losses.triplet import TripletLoss

__all__ = ["ReIDLoss"]


class ReIDLoss(nn.Module):
    r"""Sum over a model's branches of :math:`w_{ce} L_{ce} + w_{tri} L_{tri}`, plus
    :math:`w_{div} L_{div}` for a model that outputs ``part_features``.

    For each branch ``b`` of a model's output dict, the label-smoothed
    cross-entropy (Szegedy et al., CVPR 2016) on ``logits[b]`` (after the
    BNNeck) and the batch-hard triplet loss (Hermans et al., 2017) on
    ``features[b]`` (before the BNNeck), as in STGCN (CVPR 2020, sec. 3.4) and
    the BNNeck baseline (Luo et al., CVPRW 2019). When the output dict holds
    ``part_features`` (CTL), the diversity loss of CTL eq. (8)
    (:func:`~stgraph.losses.diversity_loss`) is added with weight
    :math:`w_{div}`; CTL's eq. (9) has all three weights 1.

    Two more entries let a model bring its own terms through the same door:

    * ``part_triplet_features`` :math:`(B, P, D)`: the batch-hard triplet loss of each
      of the :math:`P` parts, averaged over parts, with weight :math:`w_{ptri}` (RRU's
      part triplet, Liu et al., AAAI 2019); logged as ``"part_triplet"``. The
      :math:`P` losses are computed at once (:meth:`TripletLoss.per_part
      <stgraph.losses.TripletLoss.per_part>` on :math:`(P, B, B)` distances), no
      loop over the parts.
    * ``regularizers``: a dict of scalar tensors, each already weighted by the model
      (STA's inter-frame regularisation, DRSTA's diversity term), added to the total
      and logged under its own name.

    Args:
        num_classes (int): number of training identities.
        margin (float): triplet margin. (default: :obj:`0.3`)
        epsilon (float): label smoothing. (default: :obj:`0.1`)
        ce_weight (float), triplet_weight (float), diversity_weight (float): term
            weights. (default: :obj:`1.0`)
        part_triplet_weight (float): weight of the part triplet loss. (default: :obj:`1.0`)
        distributed (bool): in multi-process training, the triplet losses mine over the
            global batch of all processes (:class:`~stgraph.losses.TripletLoss`); the
            cross-entropy and the diversity loss are per-process means, which DDP's
            gradient average turns into the global mean. (default: :obj:`False`)

    Every term is computed in float32 (mixed precision gives half-precision outputs) and
    so is the total; a regularizer is promoted to float32.

    Shapes:
        - **input:** ``outputs`` a model's output dict, ``pids`` :math:`(B,)` long
        - **output:** ``(total scalar, {"ce", "triplet", "acc"})``, plus ``"div"`` with
          part features, ``"part_triplet"`` and one entry per regularizer when the model
          outputs them; every entry a detached 0-d tensor on the loss's device (no host
          synchronisation: read them with ``float()`` when they are logged); ``acc`` is
          the classification accuracy of the first branch, a fraction.
    """

    def __init__(self, num_classes: int, margin: float = 0.3, epsilon: float = 0.1,
                 ce_weight: float = 1.0, triplet_weight: float = 1.0,
                 diversity_weight: float = 1.0, part_triplet_weight: float = 1.0,
                 distributed: bool = False) -> None:
        super().__init__()
        self.ce = CrossEntropyLabelSmooth(num_classes, epsilon=epsilon)
        self.triplet = TripletLoss(margin=margin, distributed=distributed)
        self.ce_weight = ce_weight
        self.triplet_weight = triplet_weight
        self.diversity_weight = diversity_weight
        self.part_triplet_weight = part_triplet_weight

    def forward(self, outputs: dict, pids: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        ce = sum(self.ce(logits, pids) for logits in outputs["logits"])
        tri = sum(self.triplet(f, pids) for f in outputs["features"])
        total = self.ce_weight * ce + self.triplet_weight * tri
        with torch.no_grad():
            acc = (outputs["logits"][0].argmax(dim=1) == pids).float().mean()
        # 0-d tensors, no host sync: the Trainer reads them once per step (or epoch)
        parts = {"ce": ce.detach(), "triplet": tri.detach(), "acc": acc}
        if "part_features" in outputs:
            div = diversity_loss(outputs["part_features"])
            total = total + self.diversity_weight * div
            parts["div"] = div.detach()
        if "part_triplet_features" in outputs:
            feats = outputs["part_triplet_features"]
            if feats.dim() != 3:
                raise ValueError("part_triplet_features must be (B, P, D), got "
                                 f"{tuple(feats.shape)}")
            # all P parts at once: (P, B, B) distances, batch-hard mining on the last axis
            ptri = self.triplet.per_part(feats, pids).mean()
            total = total + self.part_triplet_weight * ptri
            parts["part_triplet"] = ptri.detach()
        for name, value in outputs.get("regularizers", {}).items():
            if name in parts:
                raise ValueError(f"regularizer name {name!r} clashes with a loss term")
            total = total + value.float()
            parts[name] = value.detach().float()
        return total, parts
