"""Which path runs: "auto" picks Triton only for CUDA tensors; clear errors otherwise."""

import pytest

from stgraph.kernels import resolve_backend, triton_available


def test_auto_and_torch_on_cpu_are_the_plain_path(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # even with the interpreter, auto stays torch
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="choose one of: auto, torch, triton"):
        resolve_backend("cuda", "cpu")


@pytest.mark.skipif(not triton_available(), reason="triton not installed")
def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", "cpu") == "triton"
