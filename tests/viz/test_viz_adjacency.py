import doctest
import importlib

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from stgraph.viz import plot_adjacency

SMALL = (3.0, 3.0)


def _colorbars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def _ticks(labels):
    return [t.get_text() for t in labels]


def test_heatmap_data_colorbar_and_labels():
    adj = torch.rand(5, 5, requires_grad=True)
    names = ["a", "b", "c", "d", "e"]
    fig = plot_adjacency(adj, node_labels=names, title="A", figsize=SMALL)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    (im,) = ax.get_images()
    np.testing.assert_allclose(im.get_array(), adj.detach().numpy(), rtol=1e-6)
    assert len(_colorbars(fig)) == 1 and im.colorbar is not None
    assert _ticks(ax.get_xticklabels()) == names
    assert _ticks(ax.get_yticklabels()) == names
    assert ax.get_title() == "A"


def test_frame_blocks_are_marked():
    T, P = 3, 4
    fig = plot_adjacency(np.random.rand(T * P, T * P), num_frames=T, figsize=SMALL)
    ax = fig.axes[0]
    labels = _ticks(ax.get_xticklabels())
    assert labels == [f"t{t}/p{p}" for t in range(T) for p in range(P)]
    seps = [ln for ln in ax.lines if ln.get_gid() == "frame_separator"]
    assert len(seps) == 2 * (T - 1)
    (top,) = ax.child_axes  # secondary x axis with the frame labels
    assert _ticks(top.get_xticklabels()) == ["t0", "t1", "t2"]
    # Given labels win over the built ones; separators are still drawn.
    fig = plot_adjacency(np.eye(6), node_labels=list("uvwxyz"), num_parts=3, figsize=SMALL)
    assert _ticks(fig.axes[0].get_xticklabels()) == list("uvwxyz")
    assert sum(ln.get_gid() == "frame_separator" for ln in fig.axes[0].lines) == 2


def test_draws_into_given_axes_and_saves(tmp_path):
    fig = Figure(figsize=SMALL)
    ax = fig.add_subplot()
    out = plot_adjacency(np.eye(4), ax=ax, save=tmp_path / "adj.png", dpi=30)
    assert out is fig and ax.get_images()
    data = (tmp_path / "adj.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100


@pytest.mark.parametrize("adj", [np.zeros(4), np.zeros((2, 3, 3)), np.zeros((3, 4))])
def test_bad_shape_raises(adj):
    with pytest.raises(ValueError, match=r"\(N, N\)"):
        plot_adjacency(adj)


def test_bad_labels_and_blocks_raise():
    with pytest.raises(ValueError, match="node_labels has 2 entries, expected 4"):
        plot_adjacency(np.eye(4), node_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"expected adj of shape \(6, 6\)"):
        plot_adjacency(np.eye(4), num_frames=2, num_parts=3)
    with pytest.raises(ValueError, match="multiple of num_parts=3"):
        plot_adjacency(np.eye(4), num_parts=3)
    with pytest.raises(ValueError, match="num_frames must be an int >= 1"):
        plot_adjacency(np.eye(4), num_frames=0)


@pytest.mark.parametrize("name", ["stgraph.viz.adjacency", "stgraph.viz.ranking"])
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
