"""ResNet-18/34/50 frame backbones returning feature maps (no pooling, no classifier).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385.

The modules and their names mirror torchvision's ``torchvision.models.resnet``
exactly (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...),
so that :func:`load_pretrained` reads the standard torchvision ImageNet files
(e.g. ``resnet50-0676ba61.pth``) from a local path without any key renaming.
Like torchvision (its "ResNet v1.5"), :class:`Bottleneck` strides in its 3x3
convolution, not in its first 1x1 one; the pretrained weights expect this.

The one re-ID change is ``last_stride`` (Luo et al., "Bag of Tricks and A Strong
Baseline for Deep Person Re-identification", CVPRW 2019, sec. 3.2): the stride of
``layer4``'s first block and of its downsample shortcut. With ``last_stride=1`` a
256 x 128 frame gives a 16 x 8 map instead of 8 x 4; it changes no parameter shape.
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from stgraph.models.backbones.cut import END, CutBackbone
from stgraph.models.backbones.loading import load_pretrained

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    r"""Two 3x3 convolutions with an identity (or 1x1-projection) shortcut (ResNet-18/34).

    .. math::
        y = \mathrm{ReLU}\big(\mathrm{BN}(W_2 * \mathrm{ReLU}(\mathrm{BN}(W_1 * x)))
        + \mathrm{shortcut}(x)\big)

    Args:
        in_channels (int): input channels.
        channels (int): width of the block; the output has
            ``channels * BasicBlock.expansion`` (= ``channels``) channels.
        stride (int): stride of the first 3x3 convolution. (default: :obj:`1`)
        downsample (nn.Module, optional): shortcut projection, ``None`` for the
            identity. (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(N, C_{in}, H, W)`
        - **output:** :math:`(N, C_{out}, \lceil H / s \rceil, \lceil W / s \rceil)`
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Registration order = torchvision's, so state_dict() lists keys in its order.
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    r"""1x1 reduce, 3x3, 1x1 expand (x4) with a shortcut (ResNet-50); torchvision's v1.5.

    The stride sits on the 3x3 convolution (torchvision's layout, which its
    ImageNet weights were trained with), not on the first 1x1 as in the paper.

    Args:
        in_channels (int): input channels.
        channels (int): bottleneck width; the output has
            ``channels * Bottleneck.expansion`` (= ``4 * channels``) channels.
        stride (int): stride of the 3x3 convolution. (default: :obj:`1`)
        downsample (nn.Module, optional): shortcut projection, ``None`` for the
            identity. (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(N, C_{in}, H, W)`
        - **output:** :math:`(N, 4 \cdot channels, \lceil H / s \rceil, \lceil W / s \rceil)`
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = _conv1x1(channels, channels * self.expansion)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: depth -> (block type, number of blocks in layer1..layer4), He et al. Table 1.
_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(CutBackbone):
    r"""ResNet trunk (stem + 4 stages) returning the last stage's feature map.

    ``conv1 (7x7, /2) -> bn1 -> relu -> maxpool (3x3, /2) -> layer1 .. layer4``;
    ``layer2`` and ``layer3`` halve the resolution, ``layer4`` divides it by
    ``last_stride``. There is no global pooling and no ``fc``: a model's head
    pools. Weights follow torchvision's initialisation: Kaiming-normal
    (fan_out, ReLU gain) for convolutions, BN weight 1 and bias 0.

    Args:
        depth (int): ``18``, ``34`` or ``50``. (default: :obj:`50`)
        last_stride (int): stride of ``layer4``'s first block and its downsample,
            ``1`` (re-ID convention, total stride 16) or ``2`` (ImageNet, total
            stride 32). (default: :obj:`1`)

    Attributes:
        out_channels (int): channels of the output map, 512 (18/34) or 2048 (50).
        depth (int), last_stride (int): the constructor arguments.

    Shapes:
        - **input:** :math:`(N, 3, H, W)`
        - **output:** :math:`(N, C_{out}, H / (16 s), W / (16 s))` with
          :math:`s` = ``last_stride`` (rounded up at each stride), e.g.
          ``(N, 2048, 16, 8)`` for a 256 x 128 input to ResNet-50 with ``last_stride=1``.

    Cuts (:mod:`~stgraph.models.backbones.cut`): ``"layer4"`` (the input of ``layer4``,
    :math:`256 e` channels at :math:`H/16 \times W/16`; the partial protocol's default),
    ``"layer3"``, ``"end"``.

    Raises:
        ValueError: unknown ``depth`` or ``last_stride`` not in ``{1, 2}``.
    """

    CUTS = ("layer4", "layer3", END)

    def __init__(self, depth: int = 50, last_stride: int = 1) -> None:
        super().__init__()
        if depth not in _SPECS:
            raise ValueError(f"unknown ResNet depth {depth}; choose one of: "
                             f"{', '.join(str(d) for d in _SPECS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        block, layers = _SPECS[depth]
        self.depth = depth
        self.last_stride = last_stride
        self.out_channels = 512 * block.expansion

        self._in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=last_stride)
        self.reset_parameters()

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], channels: int,
                    num_blocks: int, stride: int) -> nn.Sequential:
        out_channels = channels * block.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                _conv1x1(self._in_channels, out_channels, stride),
                nn.BatchNorm2d(out_channels),
            )
        blocks = [block(self._in_channels, channels, stride, downsample)]
        self._in_channels = out_channels
        blocks += [block(out_channels, channels) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """He (Kaiming) normal init, fan_out mode, for convs; BN weight 1, bias 0, fresh stats."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, running stats 0/1, counter 0

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer1(x)  # (N, 64 e, H/4, W/4), e = block expansion
        x = self.layer2(x)  # (N, 128 e, H/8, W/8)
        x = self.layer3(x)  # (N, 256 e, H/16, W/16)
        return self.layer4(x)  # (N, 512 e, H/(16 s), W/(16 s))

    def _stem(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def parts(self):
        return [(self._stem, [self.conv1, self.bn1]),
                *((layer, [layer]) for layer in (self.layer1, self.layer2, self.layer3,
                                                 self.layer4))]

    def cut_index(self, cut: str) -> int:
        return {"layer3": 3, "layer4": 4, END: 5}[cut]

    @property
    def label(self) -> str:
        """The architecture's name in messages, e.g. ``"ResNet-50"``."""
        return f"ResNet-{self.depth}"

    #: Prefix of the ImageNet classifier's keys in torchvision files, skipped when loading.
    classifier_prefix = "fc."

    def extra_repr(self) -> str:
        return f"depth={self.depth}, last_stride={self.last_stride}"


def _resnet(depth: int, last_stride: int, pretrained: str | os.PathLike | None) -> ResNet:
    model = ResNet(depth, last_stride)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


def resnet18(last_stride: int = 1, pretrained: str | os.PathLike | None = None) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]), 512 output channels.

    Args:
        last_stride (int): see :class:`ResNet`. (default: :obj:`1`)
        pretrained (str, optional): local torchvision ``.pth`` file to load with
            :func:`~stgraph.models.backbones.load_pretrained`. (default: :obj:`None`,
            random init)
    """
    return _resnet(18, last_stride, pretrained)


def resnet34(last_stride: int = 1, pretrained: str | os.PathLike | None = None) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]), 512 output channels.

    Args:
        last_stride (int): see :class:`ResNet`. (default: :obj:`1`)
        pretrained (str, optional): local torchvision ``.pth`` file to load with
            :func:`~stgraph.models.backbones.load_pretrained`. (default: :obj:`None`,
            random init)
    """
    return _resnet(34, last_stride, pretrained)


def resnet50(last_stride: int = 1, pretrained: str | os.PathLike | None = None) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]), 2048 output channels.

    Args:
        last_stride (int): see :class:`ResNet`. (default: :obj:`1`)
        pretrained (str, optional): local torchvision ``.pth`` file to load with
            :func:`~stgraph.models.backbones.load_pretrained`. (default: :obj:`None`,
            random init)
    """
    return _resnet(50, last_stride, pretrained)
