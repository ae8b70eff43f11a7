"""Input checks shared by the clip-level attention layers (STA, RRU, STIM)."""

from __future__ import annotations

from torch import Tensor


def check_clip_maps(x: Tensor, in_channels: int | None = None) -> None:
    """Check per-frame feature maps of a clip, shape ``(B, T, C, h, w)``.

    Args:
        x: the feature maps.
        in_channels: the layer's expected ``C``; ``None`` accepts any.

    Raises:
        ValueError: ``x`` is not 5-D, has an empty frame, channel or cell axis,
            or has ``C != in_channels``. The message gives the shape received.
    """
    if x.dim() != 5:
        raise ValueError(f"expected feature maps of shape (B, T, C, h, w), got {tuple(x.shape)}")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"expected feature maps with at least one frame, channel and cell, "
                         f"got shape {tuple(x.shape)} = (B, T, C, h, w)")
    if in_channels is not None and x.size(2) != in_channels:
        raise ValueError(f"expected feature maps with in_channels={in_channels} "
                         f"channels (B, T, C, h, w), got {tuple(x.shape)}")
