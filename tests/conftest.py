"""Session-wide test set-up.

Without a CUDA GPU, Triton kernels run through Triton's interpreter on CPU tensors. Triton
reads ``TRITON_INTERPRET`` when a kernel is defined, so it is set here, before any test
module imports stgraph's kernels. On a GPU machine the compiled kernels are tested
(``TRITON_INTERPRET=0`` forces that; ``=1`` forces the interpreter).
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests import shared helpers (small_models.py) from this folder; --import-mode=importlib
# does not put it on sys.path by itself
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def train_seed() -> int:
    """The ``--seed`` of the tests that train and then assert learning (default 0).

    ``STGRAPH_TEST_SEED=s`` runs them on another seed: their bars were set below the worst
    of several seeds, measured with
    ``for s in 0 1 2 3 4; do STGRAPH_TEST_SEED=$s python -m pytest -q -s -m learns; done``
    (each prints the figure it asserts on)."""
    return int(os.environ.get("STGRAPH_TEST_SEED", "0"))


def _torch_state() -> dict:
    return {"num_threads": torch.get_num_threads(),
            "default_dtype": torch.get_default_dtype(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "grad_enabled": torch.is_grad_enabled()}


@pytest.fixture(autouse=True)
def _same_torch_state_for_every_test(request):
    """Every test starts from the session's torch settings: a test that changes the
    thread count, the default dtype, deterministic algorithms or grad mode (e.g. through
    ``stgraph train --deterministic`` in-process) has them restored afterwards, so that no
    test's float32 rounding, and so no training's outcome, depends on the tests run before it."""
    before = _torch_state()
    yield
    after = _torch_state()
    if after != before:
        torch.set_num_threads(before["num_threads"])
        torch.set_default_dtype(before["default_dtype"])
        torch.use_deterministic_algorithms(before["deterministic"])
        torch.set_grad_enabled(before["grad_enabled"])
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        sys.stderr.write(f"\n[torch state] {request.node.nodeid} changed {changed}\n")
