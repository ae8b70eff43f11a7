"""Tests of stgraph.eval.compute_distance_matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stgraph.eval import compute_distance_matrix


def brute_force(qf: torch.Tensor, gf: torch.Tensor, metric: str) -> torch.Tensor:
    qf, gf = qf.double(), gf.double()
    if metric == "euclidean":
        return (qf[:, None, :] - gf[None, :, :]).pow(2).sum(-1).sqrt()
    cos = (qf[:, None, :] * gf[None, :, :]).sum(-1) / (
        qf.norm(dim=1)[:, None] * gf.norm(dim=1)[None, :])
    return 1 - cos


def test_values_by_hand():
    q = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    g = torch.tensor([[3.0, 0.0], [0.0, 1.0], [6.0, 8.0]])
    expected = torch.tensor([[3.0, 1.0, 10.0], [4.0, math.sqrt(18.0), 5.0]])
    torch.testing.assert_close(compute_distance_matrix(q, g), expected)
    q = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    g = torch.tensor([[5.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    r = 1 - 1 / math.sqrt(2)
    expected = torch.tensor([[0.0, 1.0, 2.0, r], [r, r, 1 + 1 / math.sqrt(2), 0.0]])
    torch.testing.assert_close(compute_distance_matrix(q, g, "cosine"), expected)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_brute_force(metric, dtype):
    g = torch.Generator().manual_seed(0)
    qf = torch.randn(37, 16, generator=g, dtype=dtype)
    gf = torch.randn(53, 16, generator=g, dtype=dtype) * 2
    out = compute_distance_matrix(qf, gf, metric)
    assert out.shape == (37, 53) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.double(), brute_force(qf, gf, metric), rtol=tol, atol=tol)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunked_equals_unchunked(metric):
    g = torch.Generator().manual_seed(1)
    qf = torch.randn(50, 8, generator=g, dtype=torch.float64)
    gf = torch.randn(20, 8, generator=g, dtype=torch.float64)
    full = compute_distance_matrix(qf, gf, metric, chunk_size=1000)
    for chunk in (1, 7, 50):
        torch.testing.assert_close(compute_distance_matrix(qf, gf, metric, chunk_size=chunk),
                                   full, rtol=0, atol=1e-12)


def test_identical_vectors_and_numpy_input():
    x = np.random.default_rng(0).normal(size=(5, 32))
    out = compute_distance_matrix(x, x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert (out >= 0).all()
    assert torch.allclose(out.diagonal(), torch.zeros(5, dtype=out.dtype), atol=1e-6)
    cos = compute_distance_matrix(x.astype(np.float32), x.astype(np.float32), "cosine")
    assert torch.allclose(cos.diagonal(), torch.zeros(5), atol=1e-6)
    ints = compute_distance_matrix(np.array([[0, 0]]), np.array([[3, 4]]))
    assert ints.dtype == torch.float32 and ints.item() == 5.0


def test_no_grad_even_for_inputs_requiring_grad():
    q = torch.randn(3, 4, requires_grad=True)
    out = compute_distance_matrix(q, q.detach())
    assert not out.requires_grad


def test_errors():
    with pytest.raises(ValueError, match=r"widths differ: qf \(2, 3\) vs gf \(4, 5\)"):
        compute_distance_matrix(torch.zeros(2, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"qf of shape \(Q, D\), got \(2, 3, 4\)"):
        compute_distance_matrix(torch.zeros(2, 3, 4), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"gf of shape \(G, D\), got \(5,\)"):
        compute_distance_matrix(torch.zeros(2, 5), torch.zeros(5))
    with pytest.raises(ValueError, match=r"unknown metric 'manhattan'; choose one of: "
                                         r"euclidean, cosine"):
        compute_distance_matrix(torch.zeros(2, 3), torch.zeros(2, 3), metric="manhattan")
    with pytest.raises(ValueError, match="chunk_size"):
        compute_distance_matrix(torch.zeros(2, 3), torch.zeros(2, 3), chunk_size=0)
