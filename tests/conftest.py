"""Session-wide test set-up.

Without a CUDA GPU, Triton kernels run through Triton's interpreter on CPU tensors. Triton
reads ``TRITON_INTERPRET`` when a kernel is defined, so it is set here, before any test
module imports stgraph's kernels. On a GPU machine the compiled kernels are tested
(``TRITON_INTERPRET=0`` forces that; ``=1`` forces the interpreter).
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests import shared helpers (small_models.py) from this folder; --import-mode=importlib
# does not put it on sys.path by itself
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
