"""Frames -> normalised clip tensors, and the training augmentations of a clip, without torchvision.

The augmentations are those of the Bag-of-Tricks recipe (Luo et al., "Bag of
Tricks and A Strong Baseline for Deep Person Re-identification", CVPRW 2019,
https://arxiv.org/abs/1903.07071): horizontal flip, zero padding + random crop,
random erasing. For video one random draw serves every frame of a clip, and
the clip's keypoints move with the flip and the crop (:class:`ClipAugment`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from stgraph.data.base import VideoReIDDataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClipAugment",
    "erase_clip",
    "load_clip",
    "load_clip_with_keypoints",
    "pad_crop_clip",
    "random_crop_params",
    "random_erasing_params",
]

#: Per-channel RGB mean of ImageNet, for inputs scaled to [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel RGB standard deviation of ImageNet, for inputs scaled to [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def load_clip(
    dataset: VideoReIDDataset,
    keys: Sequence[Hashable],
    height: int,
    width: int,
    flip: bool = False,
) -> Tensor:
    r"""Read frames and turn them into one normalised clip tensor.

    Each frame is read with ``dataset.read_frame``, resized to
    ``(height, width)`` with PIL's bilinear filter (what torchvision's
    ``Resize`` does on PIL images), scaled to :math:`[0, 1]` and normalised
    per channel: :math:`(x - \mu) / \sigma` with :data:`IMAGENET_MEAN` and
    :data:`IMAGENET_STD`. A key repeated in ``keys`` is read once.

    Args:
        dataset (VideoReIDDataset): where the frames come from.
        keys (Sequence): ``T`` frame keys, in clip order.
        height (int): output height :math:`H` in pixels.
        width (int): output width :math:`W` in pixels.
        flip (bool, optional): mirror every frame left-right (one decision for
            the whole clip, so motion stays consistent). (default: ``False``)

    Returns:
        FloatTensor: the clip.

    Shapes:
        - **output:** :math:`(T, 3, H, W)`, float32.

    Raises:
        ValueError: if ``keys`` is empty or ``height`` / ``width`` < 1.
        OSError: if a frame cannot be read (from ``dataset.read_frame``).
    """
    return _load(dataset, keys, height, width, flip)[0]


def _load(dataset: VideoReIDDataset, keys: Sequence[Hashable], height: int, width: int,
          flip: bool) -> tuple[Tensor, list[tuple[int, int]]]:
    """The clip of :func:`load_clip` and each frame's original ``(W, H)`` size."""
    if len(keys) == 0:
        raise ValueError("load_clip: keys is empty; a clip needs at least one frame")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"load_clip: height and width must be >= 1, got ({height}, {width})")
    size = (int(width), int(height))  # PIL sizes are (W, H)
    cache: dict[Hashable, tuple[np.ndarray, tuple[int, int]]] = {}
    frames, sizes = [], []
    for key in keys:
        hit = cache.get(key)
        if hit is None:
            img = dataset.read_frame(key)
            orig = img.size
            if img.size != size:
                img = img.resize(size, Image.BILINEAR)
            hit = cache[key] = (np.asarray(img, dtype=np.uint8), orig)
        frames.append(hit[0])
        sizes.append(hit[1])
    clip = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
    clip = clip.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # (T, 3, H, W)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    clip = clip.sub_(mean).div_(std)
    if flip:
        clip = clip.flip(-1)
    return clip.contiguous(), sizes


def load_clip_with_keypoints(
    dataset: VideoReIDDataset,
    keys: Sequence[Hashable],
    height: int,
    width: int,
    flip: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""A clip as :func:`load_clip` gives it and its frames' keypoints on the resized frames.

    Each frame's keypoints come from ``dataset.frame_keypoints`` (COCO-17 rows
    ``(x, y, score)`` in the frame's own pixels) and are scaled by
    ``width / W_0`` and ``height / H_0``, :math:`W_0 \times H_0` the frame's
    original size. A frame the dataset has no keypoints for (``None``) gets
    the prior pose of the resized frame (:func:`~stgraph.graph.prior_pose`).
    With ``flip`` the keypoints are mirrored too
    (:func:`~stgraph.graph.flip_keypoints`: ``x -> width - x``, left and right
    swapped), so they stay on the same body parts.

    Args:
        dataset, keys, height, width, flip: as :func:`load_clip`.

    Returns:
        ``(clip, keypoints)``: clip :math:`(T, 3, H, W)` float32 and keypoints
        :math:`(T, 17, 3)` float32 in pixels of the ``height x width`` frame.

    Raises:
        ValueError: as :func:`load_clip`, or a dataset's keypoints not of
            shape ``(17, 3)``, outside the frame or with a score outside [0, 1] (the
            message names the frame and the keypoints file).
    """
    from stgraph.data.base import check_keypoints_in_frame
    from stgraph.graph.keypoints import flip_keypoints, prior_pose

    clip, sizes = _load(dataset, keys, height, width, flip=False)
    rows = []
    for key, (w0, h0) in zip(keys, sizes, strict=True):
        kp = dataset.frame_keypoints(key)
        if kp is None:
            rows.append(torch.from_numpy(prior_pose(height, width)))
            continue
        kp = torch.as_tensor(np.asarray(kp, dtype=np.float32))
        if kp.shape != (17, 3):
            raise ValueError(f"{dataset.name}: keypoints of frame {key!r} have shape "
                             f"{tuple(kp.shape)}, expected (17, 3)")
        source = getattr(dataset, "keypoints_file", None)
        check_keypoints_in_frame(kp.numpy(), (w0, h0), f"{dataset.name}: keypoints of frame "
                                 f"{key}" + (f" (keypoints file {source})" if source else ""))
        kp = kp.clone()
        kp[:, 0] *= width / w0
        kp[:, 1] *= height / h0
        rows.append(kp)
    keypoints = torch.stack(rows)  # (T, 17, 3)
    if flip:
        clip = clip.flip(-1).contiguous()
        keypoints = flip_keypoints(keypoints, width)
    return clip, keypoints


# --------------------------------------------------------------------------------------------
# Training augmentations of a clip (Bag of Tricks, Luo et al. CVPRW 2019)
# --------------------------------------------------------------------------------------------


def _check_clip(fn: str, clip: Tensor) -> None:
    if clip.dim() != 4 or clip.size(1) != 3:
        raise ValueError(f"{fn}: expected a clip of shape (T, 3, H, W), got {tuple(clip.shape)}")


def _check_keypoints(fn: str, clip: Tensor, keypoints: Tensor | None) -> None:
    if keypoints is not None and (keypoints.dim() != 3 or keypoints.size(-1) != 3
                                  or keypoints.size(0) != clip.size(0)):
        raise ValueError(f"{fn}: expected keypoints of shape (T, K, 3) with T = {clip.size(0)}, "
                         f"got {tuple(keypoints.shape)}")


def _check_pad(fn: str, pad: int) -> int:
    if int(pad) != pad or pad < 0:
        raise ValueError(f"{fn}: pad must be an int >= 0 (pixels), got {pad!r}")
    return int(pad)


def _check_probability(fn: str, name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: {name} is a probability and must be in [0, 1], got {p!r}")
    return float(p)


def _check_range(fn: str, name: str, lo_hi: tuple[float, float], upper: float | None) -> None:
    lo, hi = lo_hi
    if upper is None and not 0.0 < lo <= hi:
        raise ValueError(f"{fn}: {name} must satisfy 0 < min <= max, got {tuple(lo_hi)}")
    if upper is not None and not 0.0 < lo <= hi <= upper:
        raise ValueError(f"{fn}: {name} must satisfy 0 < min <= max <= {upper:g}, "
                         f"got {tuple(lo_hi)}")


def random_crop_params(pad: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    r"""Offsets of a random ``(H, W)`` crop of a frame zero-padded by ``pad`` pixels.

    torchvision's ``Pad(pad)`` + ``RandomCrop((H, W))``: ``top`` and ``left``
    are independent and uniform on :math:`\{0, \dots, 2\,\mathrm{pad}\}`
    (``top = pad, left = pad`` is the uncropped frame). Draws two integers from
    ``generator`` (also when ``pad == 0``, both then 0).

    Args:
        pad (int): padding on each side, in pixels.
        generator (torch.Generator, optional): the random stream. (default: torch's global one)

    Returns:
        ``(top, left)``: the crop's corner in the padded frame, in pixels.

    Raises:
        ValueError: if ``pad`` is not an int >= 0.

    Examples:
        >>> top, left = random_crop_params(10, torch.Generator().manual_seed(0))
        >>> 0 <= top <= 20 and 0 <= left <= 20
        True
        >>> random_crop_params(0)
        (0, 0)
    """
    pad = _check_pad("random_crop_params", pad)
    top, left = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return top, left


def pad_crop_clip(clip: Tensor, keypoints: Tensor | None, pad: int, top: int,
                  left: int) -> tuple[Tensor, Tensor | None]:
    r"""Zero-pad every frame by ``pad`` pixels and crop it back to ``(H, W)`` at ``(top, left)``.

    Output pixel :math:`(y, x)` is input pixel :math:`(y + \mathrm{top} - \mathrm{pad},
    x + \mathrm{left} - \mathrm{pad})`, or padding where that lies outside the
    frame. *Zero padding* means black pixels, as ``Pad`` on the PIL image does in
    the recipe's code (reid-strong-baseline, torchreid) before normalisation: in
    the normalised clip the padding is :math:`-\mu / \sigma` per channel with
    :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`, not 0 (0 is the mean colour).

    Keypoints move with the pixels: :math:`x \mapsto x + \mathrm{pad} - \mathrm{left}`,
    :math:`y \mapsto y + \mathrm{pad} - \mathrm{top}`; scores are kept. A
    keypoint the crop pushes out of the frame keeps its (outside) coordinates
    and score: consumers that render heatmaps (CTL) handle off-grid points.

    Args:
        clip (Tensor): a normalised clip, e.g. from :func:`load_clip`.
        keypoints (Tensor or None): its keypoints ``(x, y, score)`` in pixels, or ``None``.
        pad (int): padding on each side, in pixels.
        top (int): crop row offset in the padded frame, in :math:`[0, 2\,\mathrm{pad}]`.
        left (int): crop column offset in the padded frame, in :math:`[0, 2\,\mathrm{pad}]`.

    Returns:
        ``(clip, keypoints)``: new tensors of the input shapes (``keypoints``
        ``None`` if it was ``None``).

    Shapes:
        - **input:** clip :math:`(T, 3, H, W)`, keypoints :math:`(T, K, 3)`.
        - **output:** the same.

    Raises:
        ValueError: if ``pad`` < 0, ``top`` / ``left`` outside :math:`[0, 2\,\mathrm{pad}]`,
            or the shapes are wrong.

    Examples:
        >>> clip = torch.ones(2, 3, 4, 4)
        >>> kp = torch.tensor([[[0.5, 0.5, 1.0]]]).expand(2, 1, 3)
        >>> out, kp2 = pad_crop_clip(clip, kp, pad=1, top=0, left=2)  # shift down 1, left 1
        >>> kp2[0, 0].tolist()
        [-0.5, 1.5, 1.0]
        >>> bool((out[:, :, 0] < 0).all()), bool((out[:, :, 1:, :3] == 1).all())
        (True, True)
    """
    fn = "pad_crop_clip"
    pad = _check_pad(fn, pad)
    _check_clip(fn, clip)
    _check_keypoints(fn, clip, keypoints)
    for name, value in (("top", top), ("left", left)):
        if int(value) != value or not 0 <= value <= 2 * pad:
            raise ValueError(f"{fn}: {name} must be an int in [0, 2 * pad] = [0, {2 * pad}], "
                             f"got {value!r}")
    height, width = clip.shape[-2:]
    dy, dx = int(top) - pad, int(left) - pad  # output (y, x) reads input (y + dy, x + dx)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    out = black.to(clip).view(1, 3, 1, 1).expand_as(clip).clone()  # (T, 3, H, W)
    y0, y1 = max(0, -dy), min(height, height - dy)
    x0, x1 = max(0, -dx), min(width, width - dx)
    if y0 < y1 and x0 < x1:
        out[:, :, y0:y1, x0:x1] = clip[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    if keypoints is not None:
        keypoints = keypoints.clone()
        keypoints[..., 0] -= dx
        keypoints[..., 1] -= dy
    return out, keypoints


def random_erasing_params(
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 3.3),
    attempts: int = 10,
) -> tuple[int, int, int, int] | None:
    r"""The rectangle of random erasing, or ``None`` for no erasing.

    Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020,
    https://arxiv.org/abs/1708.04896) with the draws of torchvision's
    ``RandomErasing.get_params``: erase with probability ``p``; then up to
    ``attempts`` times draw a target area :math:`s \cdot H W`, :math:`s \sim
    U(\mathrm{area})`, and an aspect ratio :math:`r = h / w` log-uniform on
    ``aspect``; :math:`h = \mathrm{round}(\sqrt{s H W r})`,
    :math:`w = \mathrm{round}(\sqrt{s H W / r})`; the first attempt with
    :math:`h < H` and :math:`w < W` is placed uniformly in the frame. If no
    attempt fits, nothing is erased (``None``), as in torchvision. Because of
    the rounding, :math:`h w / (H W)` can leave ``area`` by a rounding margin.

    Args:
        height (int): frame height :math:`H` in pixels.
        width (int): frame width :math:`W` in pixels.
        generator (torch.Generator, optional): the random stream. (default: torch's global one)
        p (float, optional): probability of erasing. (default: ``0.5``)
        area (tuple of float, optional): range of the erased fraction of the
            frame, :math:`0 < a_0 \le a_1 \le 1`. (default: ``(0.02, 0.4)``, the recipe's)
        aspect (tuple of float, optional): range of :math:`h / w`,
            :math:`0 < r_0 \le r_1`. (default: ``(0.3, 3.3)``)
        attempts (int, optional): tries before giving up. (default: ``10``)

    Returns:
        ``(top, left, h, w)`` in pixels, or ``None``.

    Raises:
        ValueError: if ``height`` / ``width`` < 1, ``p`` outside :math:`[0, 1]`,
            ``area`` or ``aspect`` not ordered ranges as above, or ``attempts`` < 1.

    Examples:
        >>> random_erasing_params(128, 64, p=0.0) is None
        True
        >>> top, left, h, w = random_erasing_params(128, 64, torch.Generator().manual_seed(0), p=1)
        >>> 0 <= top and top + h <= 128 and 0 <= left and left + w <= 64
        True
    """
    fn = "random_erasing_params"
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"{fn}: height and width must be >= 1, got ({height}, {width})")
    p = _check_probability(fn, "p", p)
    _check_range(fn, "area", area, upper=1.0)
    _check_range(fn, "aspect", aspect, upper=None)
    if int(attempts) < 1:
        raise ValueError(f"{fn}: attempts must be >= 1, got {attempts!r}")
    if not bool(torch.rand((), generator=generator) < p):
        return None
    frame_area = height * width
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(int(attempts)):
        target = frame_area * torch.empty(()).uniform_(area[0], area[1], generator=generator).item()
        ratio = math.exp(torch.empty(()).uniform_(*log_aspect, generator=generator).item())
        h = int(round(math.sqrt(target * ratio)))
        w = int(round(math.sqrt(target / ratio)))
        if not (h < height and w < width):
            continue
        top = int(torch.randint(0, height - h + 1, (), generator=generator))
        left = int(torch.randint(0, width - w + 1, (), generator=generator))
        return top, left, h, w
    return None


def erase_clip(clip: Tensor, top: int, left: int, h: int, w: int, value: float = 0.0) -> Tensor:
    r"""Fill the same ``h x w`` rectangle at ``(top, left)`` of every frame with ``value``.

    The default 0 is the ImageNet mean colour in a clip normalised by
    :func:`load_clip` (the recipe fills with the mean), so erased pixels carry
    no signal after normalisation. Keypoints are not changed by erasing: the
    body part is occluded, not moved.

    Args:
        clip (Tensor): a normalised clip.
        top (int): first erased row, in pixels.
        left (int): first erased column, in pixels.
        h (int): erased height, in pixels.
        w (int): erased width, in pixels.
        value (float, optional): the fill, in normalised units. (default: ``0.0``)

    Returns:
        Tensor: a new clip of the input's shape.

    Shapes:
        - **input:** :math:`(T, 3, H, W)`.
        - **output:** :math:`(T, 3, H, W)`.

    Raises:
        ValueError: if the rectangle is empty or not inside the frame, or the clip
            is not :math:`(T, 3, H, W)`.

    Examples:
        >>> out = erase_clip(torch.ones(2, 3, 4, 4), top=1, left=0, h=2, w=3)
        >>> int((out == 0).sum())  # 2 frames x 3 channels x 2 x 3 pixels
        36
    """
    fn = "erase_clip"
    _check_clip(fn, clip)
    height, width = clip.shape[-2:]
    if not (h >= 1 and w >= 1 and 0 <= top and top + h <= height and 0 <= left
            and left + w <= width):
        raise ValueError(f"{fn}: rectangle (top={top}, left={left}, h={h}, w={w}) is empty or "
                         f"not inside the {height} x {width} frame")
    out = clip.clone()
    out[:, :, top:top + h, left:left + w] = value
    return out


@dataclass(frozen=True)
class ClipAugment:
    r"""The Bag-of-Tricks training augmentations of one clip, with one draw for all its frames.

    Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person
    Re-identification", CVPRW 2019 (https://arxiv.org/abs/1903.07071), in their
    code's order: horizontal flip with probability 0.5 (keypoints mirrored and
    left / right swapped, :func:`~stgraph.graph.flip_keypoints`), zero padding
    by ``pad`` pixels + random crop back to ``(H, W)`` (:func:`pad_crop_clip`),
    random erasing with probability ``erasing`` (:func:`random_erasing_params`,
    :func:`erase_clip`). Every frame gets the same flip, crop offset and
    erased rectangle, so motion between frames is untouched.

    Draw order from ``generator``: the flip coin and the two crop offsets are
    always drawn, also when their step is off, so switching one step off leaves
    the other steps' draws unchanged; erasing draws last.

    Args:
        flip (bool, optional): random horizontal flip, :math:`p = 0.5`. (default: ``True``)
        pad (int, optional): padding on each side before the random crop, in
            pixels; 0 turns the crop off. (default: ``10``)
        erasing (float, optional): probability of random erasing; 0 turns it
            off. (default: ``0.5``)
        area (tuple of float, optional): erased fraction of the frame.
            (default: ``(0.02, 0.4)``)
        aspect (tuple of float, optional): erased :math:`h / w`. (default: ``(0.3, 3.3)``)

    Shapes:
        - **input:** clip :math:`(T, 3, H, W)` normalised as :func:`load_clip`
          does; keypoints :math:`(T, K, 3)` in pixels of the frame, or ``None``.
        - **output:** ``(clip, keypoints)`` of the same shapes (``None`` stays ``None``).

    Raises:
        ValueError: ``pad`` < 0, ``erasing`` outside :math:`[0, 1]`, or bad
            ``area`` / ``aspect`` ranges (at construction); wrong shapes (at call).

    Examples:
        >>> aug = ClipAugment(flip=False, pad=0, erasing=0.0)
        >>> clip = torch.randn(4, 3, 8, 4)
        >>> out, kp = aug(clip, None, torch.Generator().manual_seed(0))
        >>> bool(torch.equal(out, clip)), kp is None
        (True, True)
    """

    flip: bool = True
    pad: int = 10
    erasing: float = 0.5
    area: tuple[float, float] = (0.02, 0.4)
    aspect: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        fn = self.__class__.__name__
        _check_pad(fn, self.pad)
        _check_probability(fn, "erasing", self.erasing)
        _check_range(fn, "area", self.area, upper=1.0)
        _check_range(fn, "aspect", self.aspect, upper=None)

    def __call__(self, clip: Tensor, keypoints: Tensor | None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        fn = self.__class__.__name__
        _check_clip(fn, clip)
        _check_keypoints(fn, clip, keypoints)
        height, width = clip.shape[-2:]
        flip = bool(torch.rand((), generator=generator) < 0.5)  # drawn even when off
        top, left = random_crop_params(self.pad, generator)  # drawn even when off
        if self.flip and flip:
            from stgraph.graph.keypoints import flip_keypoints

            clip = clip.flip(-1)
            if keypoints is not None:
                keypoints = flip_keypoints(keypoints, width)
        if self.pad > 0:
            clip, keypoints = pad_crop_clip(clip, keypoints, self.pad, top, left)
        if self.erasing > 0:
            rect = random_erasing_params(height, width, generator, p=self.erasing,
                                         area=self.area, aspect=self.aspect)
            if rect is not None:
                clip = erase_clip(clip, *rect)
        return clip.contiguous(), keypoints
