"""Fused GPU kernels (Triton) for the hot graph operations, each beside a plain-PyTorch
reference implementation of the same function.

Backends, as the layers take them (``backend=``):

* ``"torch"``: the plain batched-matmul path (runs everywhere);
* ``"triton"``: the fused Triton kernels (CUDA tensors; on the CPU only through Triton's
  interpreter, ``TRITON_INTERPRET=1``, which is how the tests run them without a GPU);
* ``"auto"``: ``"triton"`` for CUDA inputs when Triton is installed, ``"torch"`` otherwise;
* ``"pyg"``: the sparse ``MessagePassing`` twin (models only).
"""

from stgraph.kernels.affinity import (
    EPS,
    MAX_NODES,
    AffinityPropagate,
    affinity_adjacency,
    affinity_propagate,
    affinity_propagate_reference,
)
from stgraph.kernels.backend import BACKENDS, resolve_backend, triton_available
from stgraph.kernels.window import sliding_windows, window_propagate, window_propagate_reference

__all__ = [
    "BACKENDS",
    "EPS",
    "MAX_NODES",
    "AffinityPropagate",
    "affinity_adjacency",
    "affinity_propagate",
    "affinity_propagate_reference",
    "resolve_backend",
    "sliding_windows",
    "triton_available",
    "window_propagate",
    "window_propagate_reference",
]
