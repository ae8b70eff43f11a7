"""Checks a training run makes before its first step: will a batch fit in memory, are the
backbone's feature maps large enough for the head, do the clips repeat frames.

Each check measures rather than guesses: the backbone's activation memory is what one
frame's forward pass saves for the backward pass (:func:`activation_bytes`, counted with
:func:`torch.autograd.graph.saved_tensors_hooks`), and the head is run once on maps of the
run's size (:func:`check_map_size`). ``stgraph train`` calls them; a user's own loop can too.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache

import torch
from torch import nn

from stgraph.errors import SettingError, SettingMemoryError, SettingWarning

__all__ = [
    "MIN_MAP_CELLS",
    "MemoryEstimate",
    "activation_bytes",
    "available_memory",
    "check_map_size",
    "check_memory",
    "repeated_frames",
]

#: Below this many feature-map rows x columns a warning is given: 4 x 2 cells is what a
#: 64 x 32 input gives with last stride 1 (the papers use 16 x 8, from 256 x 128).
MIN_MAP_CELLS = (4, 2)

_GB = 1024 ** 3


def _fmt(nbytes: float) -> str:
    return f"{nbytes / _GB:.1f} GiB" if nbytes >= _GB else f"{nbytes / 1024 ** 2:.0f} MiB"


@lru_cache(maxsize=32)
def _measure(name: str, last_stride: int, height: int, width: int) -> tuple[int, int, tuple]:
    from stgraph.models.backbones import build_backbone

    with torch.random.fork_rng(devices=[]):
        backbone = build_backbone(name, last_stride=last_stride)
    backbone.train()
    saved: dict[tuple, int] = {}  # one count per storage: ops that save one tensor share it
    largest = 0

    weights = {p.untyped_storage().data_ptr() for p in backbone.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in backbone.buffers()}

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.device)
        if key[0] in weights:  # the parameters, saved for the input's gradient: not per frame
            return t
        saved[key] = max(saved.get(key, 0), t.untyped_storage().nbytes())
        return t

    def track(_module, _inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    hooks = [m.register_forward_hook(track) for m in backbone.modules()
             if not list(m.children())]
    try:
        x = torch.zeros(2, 3, height, width, requires_grad=True)  # 2: batch norm needs > 1
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = backbone(x)
    finally:
        for h in hooks:
            h.remove()
    return sum(saved.values()) // 2, largest // 2, tuple(out.shape[1:])


def activation_bytes(backbone: str, height: int, width: int,
                     last_stride: int = 1) -> tuple[int, int, tuple[int, int, int]]:
    """What one ``height x width`` frame costs the backbone, measured once per backbone and
    size (cached in the process) on a randomly initialised copy in float32.

    Returns:
        ``(train_bytes, eval_bytes, map_shape)``: the bytes the training forward pass saves
        for the backward pass per frame; the largest single activation per frame (an
        evaluation pass without gradients holds about two such tensors at a time); and
        the feature map's ``(C, h, w)``.
    """
    return _measure(backbone, int(last_stride), int(height), int(width))


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes this process can still allocate on ``device``: on CUDA the free device memory
    (:func:`torch.cuda.mem_get_info`); on the CPU the system's available memory
    (``MemAvailable`` of ``/proc/meminfo``), capped by the cgroup limit a container sets.
    :obj:`None` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            avail = None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            free = int(limit) - used
            avail = free if avail is None else min(avail, free)
    except (OSError, ValueError):
        pass
    return avail


class MemoryEstimate(dict):
    """:func:`check_memory`'s figures (bytes): ``train`` and ``test`` batches, ``available``,
    per-frame ``train_per_frame`` / ``eval_per_frame``; a dict."""


def check_memory(backbone: str, seq_len: int, height: int, width: int, train_clips: int,
                 test_clips: int, last_stride: int = 1, device: torch.device | str = "cpu",
                 fraction: float = 0.9) -> MemoryEstimate:
    r"""Refuse a run whose training or test batch cannot fit in the memory available.

    A training batch of :math:`B` clips of :math:`T` frames needs about
    :math:`B T (a + 2 \cdot 4 \cdot 3 H W)` bytes: :math:`a` what the backbone saves per
    frame for its backward pass (:func:`activation_bytes`, measured), plus the clip and its
    gradient-free copy in float32; a test batch :math:`B' T (2 m + 4 \cdot 3 H W)`, with
    :math:`m` the largest activation of a frame. The head's memory is left out (it is small
    next to the backbone's); so is the rest of the process, which is why only
    ``fraction`` of the available memory counts.

    Returns:
        MemoryEstimate: the figures (also when memory cannot be read: then ``available``
        is :obj:`None` and nothing is refused).

    Raises:
        SettingMemoryError: (a :class:`MemoryError`) either batch needs more than
            ``fraction`` of :func:`available_memory`; the message gives both figures and the
            settings that lower it (with the largest ``seq_len`` that fits), spelled as
            arguments (``seq_len``) or, from ``stgraph train``, as flags (``--seq-len``).
    """
    train_pf, eval_pf, _ = activation_bytes(backbone, height, width, last_stride)
    pixels = 3 * height * width * 4
    per_train_frame = train_pf + 2 * pixels
    per_test_frame = 2 * eval_pf + pixels
    est = MemoryEstimate(train=train_clips * seq_len * per_train_frame,
                         test=test_clips * seq_len * per_test_frame,
                         train_per_frame=train_pf, eval_per_frame=eval_pf,
                         available=available_memory(device))
    if est["available"] is None:
        return est
    budget = fraction * est["available"]
    for kind, clips, per_frame, batch in (
            ("training", train_clips, per_train_frame, "{batch_ids} / {batch_instances}"),
            ("test", test_clips, per_test_frame, "{test_batch}")):
        need = clips * seq_len * per_frame
        if need > budget:
            fits = int(budget // (clips * per_frame))
            raise SettingMemoryError(
                "a {kind} batch of {clips} clips x {T} frames at {H} x {W} needs about "
                "{need} for {backbone_name}'s activations ({frame} a frame, measured), but "
                "{available} is available on {device_type}: lower {seq_len} (at most {fits} "
                "fits), " + batch + " or {height} / {width}",
                kind=kind, clips=clips, T=seq_len, H=height, W=width, need=_fmt(need),
                backbone_name=backbone, frame=_fmt(per_frame), available=_fmt(est["available"]),
                device_type=torch.device(device).type, fits=fits)
    return est


def check_map_size(model: nn.Module, seq_len: int, height: int, width: int) -> tuple[int, int]:
    """Run ``model``'s head once (no gradients, eval mode, the RNG untouched) on zero
    feature maps of the size ``height x width`` frames give, and warn below
    :data:`MIN_MAP_CELLS`.

    Returns:
        ``(h, w)``: the feature map's rows and columns.

    Raises:
        SettingError: (a :class:`ValueError`) the maps are empty, or the head refuses them
            (e.g. STGCN's ``num_patches`` stripes need as many rows); the message names the
            map size and the head's reason, and ``height`` / ``width`` as settings.

    Warns:
        SettingWarning: maps below :data:`MIN_MAP_CELLS`.
    """
    from stgraph.cache import FeatureMapHead

    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            p = next(model.parameters())
            frame = torch.zeros(1, 3, height, width, device=p.device, dtype=p.dtype)
            try:
                C, h, w = model.backbone(frame).shape[1:]
            except RuntimeError as err:
                raise SettingError("{height} {H} {width} {W}: the backbone cannot take frames "
                                   "this small ({why})", H=height, W=width,
                                   why=str(err).splitlines()[0]) from None
            size = f"{h} x {w} feature-map cells (from {height} x {width} frames)"
            if h * w == 0:
                raise SettingError("{height} {H} {width} {W} gives {size}: raise the frame size",
                                   H=height, W=width, size=size)
            maps = torch.zeros(1, seq_len, C, h, w, device=p.device, dtype=p.dtype)
            try:
                FeatureMapHead(model, (height, width))(maps)
            except (ValueError, RuntimeError) as err:
                raise SettingError("{height} {H} {width} {W} gives {size}, too few for model "
                                   "{model_name}: {why}", H=height, W=width, size=size,
                                   model_name=type(model).__name__,
                                   why=str(err).splitlines()[0]) from None
    finally:
        model.train(was)
    if h < MIN_MAP_CELLS[0] or w < MIN_MAP_CELLS[1]:
        warnings.warn(SettingWarning("{height} {H} {width} {W} gives {size}, below {min_h} x "
                                     "{min_w}: the head sees little spatial detail (the papers "
                                     "use 256 x 128, 16 x 8 cells)", H=height, W=width,
                                     size=size, min_h=MIN_MAP_CELLS[0], min_w=MIN_MAP_CELLS[1]),
                      stacklevel=2)
    return int(h), int(w)


def repeated_frames(seq_len: int, lengths: list[int]) -> int | None:
    """How many of a clip's ``seq_len`` frames repeat others in the longest tracklet of
    ``lengths`` (frames per tracklet); :obj:`None` when ``seq_len`` does not exceed it."""
    longest = max(lengths) if lengths else 0
    if seq_len <= longest:
        return None
    return seq_len - longest

