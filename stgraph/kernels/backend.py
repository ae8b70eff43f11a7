"""Choosing between the plain PyTorch path and the Triton kernels."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["BACKENDS", "resolve_backend", "triton_available"]

#: Backends a dense layer accepts.
BACKENDS = ("auto", "torch", "triton")


@functools.cache
def triton_available() -> bool:
    """Whether Triton can be imported (it is the optional ``stgraph[triton]`` extra)."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend that will run for tensors on ``device``: ``"torch"`` or ``"triton"``.

    ``"auto"`` picks ``"triton"`` on CUDA devices when Triton is installed, and
    ``"torch"`` otherwise. ``"triton"`` needs Triton and a CUDA device, or the
    interpreter (``TRITON_INTERPRET=1``) for CPU tensors.

    Args:
        backend (str): one of :data:`BACKENDS`.
        device (torch.device or str): where the inputs live.

    Returns:
        str: ``"torch"`` or ``"triton"``.

    Raises:
        ValueError: an unknown backend name (the message lists the valid ones).
        RuntimeError: ``"triton"`` asked for where it cannot run (the message says why).

    Examples:
        >>> resolve_backend("auto", "cpu")
        'torch'
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    usable = triton_available() and (device.type == "cuda" or _interpreting())
    if backend == "auto":
        return "triton" if usable and device.type == "cuda" else "torch"
    if not triton_available():
        raise RuntimeError("backend='triton' needs Triton: pip install 'stgraph[triton]'")
    if not usable:
        raise RuntimeError(
            f"backend='triton' runs on CUDA tensors (got {device.type}); on the CPU only "
            "through Triton's interpreter, TRITON_INTERPRET=1"
        )
    return "triton"
