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

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "load_clip", "load_clip_with_keypoints"]

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
            shape ``(17, 3)`` (the message names the frame).
    """
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
        kp = kp.clone()
        kp[:, 0] *= width / w0
        kp[:, 1] *= height / h0
        rows.append(kp)
    keypoints = torch.stack(rows)  # (T, 17, 3)
    if flip:
        clip = clip.flip(-1).contiguous()
        keypoints = flip_keypoints(keypoints, width)
    return clip, keypoints
