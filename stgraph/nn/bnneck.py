"""BNNeck: batch-norm bottleneck between the embedding and the identity classifier.

Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person
Re-identification", CVPRW 2019, sec. 3.3.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BNNeck"]


class BNNeck(nn.Module):
    r"""Batch norm (shift frozen at 0) followed by a bias-free identity classifier.

    The triplet loss is applied to the feature *before* the BN, the
    cross-entropy to the logits of the normalised feature, and the normalised
    feature is the retrieval embedding at test time (BNNeck, CVPRW 2019).

    Args:
        in_channels (int): feature width :math:`D`.
        num_classes (int): number of training identities.

    Shapes:
        - **input:** :math:`(B, D)`
        - **output:** ``(embedding (B, D), logits (B, num_classes))``
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.bn = nn.BatchNorm1d(in_channels)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_channels, num_classes, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.bn.reset_parameters()
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.bn(x)
        return emb, self.classifier(emb)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, num_classes={self.num_classes})"
