"""Frames -> normalised clip tensors, without torchvision."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from stgraph.data.base import VideoReIDDataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "load_clip"]

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
    if len(keys) == 0:
        raise ValueError("load_clip: keys is empty; a clip needs at least one frame")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"load_clip: height and width must be >= 1, got ({height}, {width})")
    size = (int(width), int(height))  # PIL sizes are (W, H)
    cache: dict[Hashable, np.ndarray] = {}
    frames = []
    for key in keys:
        arr = cache.get(key)
        if arr is None:
            img = dataset.read_frame(key)
            if img.size != size:
                img = img.resize(size, Image.BILINEAR)
            arr = cache[key] = np.asarray(img, dtype=np.uint8)
        frames.append(arr)
    clip = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
    clip = clip.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # (T, 3, H, W)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    clip = clip.sub_(mean).div_(std)
    if flip:
        clip = clip.flip(-1)
    return clip.contiguous()
