import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from stgraph.data.synthetic import SyntheticReID
from stgraph.graph.keypoints import prior_pose
from stgraph.graph.skeleton import COCO17
from stgraph.viz import plot_cross_scale, plot_skeleton_graph, plot_temporal_graph


def _colorbars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def _by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def _segments(ax, gid):
    colls = _by_gid(ax, gid)
    assert len(colls) <= 1 and all(isinstance(c, LineCollection) for c in colls)
    return [np.asarray(s) for c in colls for s in c.get_segments()]


def _distinct_symmetric(n, seed=0):
    """Symmetric matrix whose upper-triangle weights are all distinct."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    iu = np.triu_indices(n, 1)
    a[iu] = rng.permutation(len(iu[0])) + 1.0
    return a + a.T


# ---------------------------------------------------------------------------- skeleton


def test_skeleton_top_k_edges_physical_vs_learned():
    kp = prior_pose(128, 64)
    adj = _distinct_symmetric(17)
    for i, j in COCO17.edges[:4]:  # four physical edges among the strongest
        adj[i, j] += 1000.0 + i + j
        adj[j, i] = adj[i, j]
    k = 12
    fig = plot_skeleton_graph(torch.from_numpy(kp), torch.from_numpy(adj), top_k=k,
                              figsize=(3, 4))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    phys, learned = _segments(ax, "physical_edges"), _segments(ax, "learned_edges")
    assert len(phys) + len(learned) == k

    # The drawn pairs are the k strongest; physical ones solid, the others dashed.
    iu = np.triu_indices(17, 1)
    order = np.argsort(-adj[iu])[:k]
    expected = {(int(iu[0][o]), int(iu[1][o])) for o in order}
    def node(p):  # the keypoint at an edge end
        return int(np.argmin(np.abs(kp[:, :2] - p).sum(1)))

    def pairs(segs):
        return {tuple(sorted(node(p) for p in s)) for s in segs}

    physical = COCO17.physical_adjacency("s1").numpy() > 0
    assert pairs(phys) | pairs(learned) == expected
    assert all(physical[i, j] for i, j in pairs(phys))
    assert not any(physical[i, j] for i, j in pairs(learned))
    (pc,) = _by_gid(ax, "physical_edges")
    (lc,) = _by_gid(ax, "learned_edges")
    assert pc.get_linestyle()[0][1] is None  # solid
    assert lc.get_linestyle()[0][1] is not None  # dashed
    # The skeleton underneath, the colour bar, a legend, y pointing down.
    assert len(_segments(ax, "skeleton")) == len(COCO17.edges)
    assert len(_colorbars(fig)) == 1
    assert ax.get_legend() is not None
    lo, hi = ax.get_ylim()
    assert lo > hi


@pytest.mark.parametrize("scale", ["s2", "s3"])
def test_skeleton_part_scale_nodes_at_mean_positions(scale):
    kp = prior_pose(128, 64)
    n = COCO17.num_nodes(scale)
    fig = plot_skeleton_graph(kp, np.ones((n, n)), scale=scale, figsize=(3, 4))
    ax = fig.axes[0]
    nodes = [c for c in ax.collections if c.get_gid() is None and len(c.get_offsets()) == n]
    expected = COCO17.group_matrix(scale).numpy() @ kp[:, :2]
    np.testing.assert_allclose(nodes[-1].get_offsets(), expected, rtol=1e-5)
    drawn = len(_segments(ax, "physical_edges")) + len(_segments(ax, "learned_edges"))
    assert drawn == n * (n - 1) // 2  # all pairs, no self-loops
    assert [t.get_text() for t in ax.texts] == list(COCO17.part_names(scale))


def test_skeleton_over_synthetic_frame(tmp_path):
    ds = SyntheticReID(num_train_ids=1, num_test_ids=1, min_frames=1, max_frames=1,
                       image_size=(64, 32))
    key = ds.query[0].frames[0]
    img = ds.read_frame(key)
    fig = plot_skeleton_graph(ds.frame_keypoints(key), np.random.rand(17, 17), image=img,
                              top_k=5, threshold=0.0, save=tmp_path / "skel.png", dpi=30,
                              figsize=(3, 4))
    ax = fig.axes[0]
    (im,) = ax.get_images()
    assert im.get_extent() == [0, 32, 64, 0]
    np.testing.assert_array_equal(im.get_array(), np.asarray(img))
    assert (tmp_path / "skel.png").stat().st_size > 100
    # Float CHW tensor images work too.
    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    plot_skeleton_graph(ds.frame_keypoints(key), np.eye(17), image=chw, figsize=(3, 4))


def test_skeleton_bad_shapes_raise():
    kp = prior_pose(128, 64)
    with pytest.raises(ValueError, match=r"\(17, 2\) or \(17, 3\)"):
        plot_skeleton_graph(kp[:16], np.eye(17))
    with pytest.raises(ValueError, match=r"\(17, 2\) or \(17, 3\)"):
        plot_skeleton_graph(np.zeros((17, 4)), np.eye(17))
    with pytest.raises(ValueError, match=r"adjacency of shape \(5, 5\) for scale 's3'"):
        plot_skeleton_graph(kp, np.eye(17), scale="s3")
    with pytest.raises(ValueError, match=r"pass one frame block, e.g. adj\[:17, :17\]"):
        plot_skeleton_graph(kp, np.eye(51))
    with pytest.raises(ValueError, match="unknown scale 's4'"):
        plot_skeleton_graph(kp, np.eye(17), scale="s4")
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        plot_skeleton_graph(kp, np.eye(17), top_k=0)
    with pytest.raises(ValueError, match=r"float image must be in \[0, 1\]"):
        plot_skeleton_graph(kp, np.eye(17), image=np.full((8, 4, 3), -2.0))


# ---------------------------------------------------------------------------- temporal


def test_temporal_top_k_intra_vs_cross():
    T, P, k = 3, 5, 9
    adj = _distinct_symmetric(T * P, seed=1)
    fig = plot_temporal_graph(torch.from_numpy(adj).float(), T, P, top_k=k,
                              part_labels=COCO17.part_names("s3"), figsize=(3, 3))
    ax = fig.axes[0]
    intra = _by_gid(ax, "intra_frame_edges")
    assert all(isinstance(p, FancyArrowPatch) for p in intra)
    cross = _by_gid(ax, "cross_frame_edges")
    cross_lines = [c for c in cross if isinstance(c, LineCollection)]
    cross_arcs = [c for c in cross if isinstance(c, FancyArrowPatch)]
    assert len(cross_lines) + len(cross_arcs) == len(cross)
    cross_segs = [np.asarray(s) for c in cross_lines for s in c.get_segments()]
    assert len(intra) + len(cross_segs) + len(cross_arcs) == k

    iu = np.triu_indices(T * P, 1)
    order = np.argsort(-adj[iu])[:k]
    n_intra = sum(iu[0][o] // P == iu[1][o] // P for o in order)
    assert len(intra) == n_intra
    for seg in cross_segs:  # straight cross-frame edges join different columns (frames)...
        assert seg[0, 0] != seg[1, 0]
        dt, dp = np.abs(seg[1] - seg[0]).round().astype(int)
        assert np.gcd(dt, dp) == 1  # ...and run over no other node
    # Grid layout: node t * P + p at (t, -p); labels on the axes.
    nodes = [c for c in ax.collections if len(c.get_offsets()) == T * P][-1]
    expected = [(t, -p) for t in range(T) for p in range(P)]
    np.testing.assert_allclose(nodes.get_offsets(), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t0", "t1", "t2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(COCO17.part_names("s3"))
    assert ax.get_legend() is not None


def test_temporal_edges_over_other_nodes_are_arcs():
    T, P = 3, 3
    adj = np.zeros((T * P, T * P))
    for a, b in ((0, 2 * P), (0, 2 * P + 2), (0, P + 1), (1, P + 2)):  # p0: t0 -> t2, ...
        adj[a, b] = adj[b, a] = 1.0
    fig = plot_temporal_graph(adj, T, P, top_k=None, figsize=(3, 3))
    cross = _by_gid(fig.axes[0], "cross_frame_edges")
    arcs = [c for c in cross if isinstance(c, FancyArrowPatch)]
    (lines,) = [c for c in cross if isinstance(c, LineCollection)]
    assert len(arcs) == 2 and len(lines.get_segments()) == 2
    assert not _by_gid(fig.axes[0], "intra_frame_edges")


def test_temporal_quantile_and_save(tmp_path):
    T, P = 2, 4
    adj = _distinct_symmetric(T * P, seed=2)
    w = adj[np.triu_indices(T * P, 1)]
    fig = plot_temporal_graph(adj, T, P, quantile=0.75, save=tmp_path / "t.png", dpi=30,
                              figsize=(2, 2))
    ax = fig.axes[0]
    drawn = sum(len(a.get_segments()) if isinstance(a, LineCollection) else 1
                for gid in ("intra_frame_edges", "cross_frame_edges") for a in _by_gid(ax, gid))
    assert drawn == int((w >= np.quantile(w, 0.75)).sum())
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_temporal_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"expected adj of shape \(15, 15\)"):
        plot_temporal_graph(np.eye(12), 3, 5)
    with pytest.raises(ValueError, match=r"\(15, 15\)"):
        plot_temporal_graph(np.zeros((2, 15, 15)), 3, 5)
    with pytest.raises(ValueError, match="num_parts must be an int >= 1"):
        plot_temporal_graph(np.eye(3), 3, 0)
    with pytest.raises(ValueError, match="part_labels has 2 entries, expected 5"):
        plot_temporal_graph(np.eye(15), 3, 5, part_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"quantile must be a number in \[0, 1\]"):
        plot_temporal_graph(np.eye(15), 3, 5, quantile=2.0)


# ---------------------------------------------------------------------------- cross-scale


def test_cross_scale_edges_heatmap_and_labels(tmp_path):
    att = torch.softmax(torch.randn(5, 17), dim=-1)
    fine, coarse = COCO17.part_names("s1"), COCO17.part_names("s3")
    fig = plot_cross_scale(att, fine, coarse, save=tmp_path / "cs.png", dpi=30)
    graph_ax, heat_ax = fig.axes[:2]
    segs = _segments(graph_ax, "cross_scale_edges")
    assert len(segs) == 5 * 17
    for seg in segs:  # fine (left, x=0) -> coarse (right, x=1)
        assert sorted(seg[:, 0]) == [0.0, 1.0]
    (im,) = heat_ax.get_images()
    np.testing.assert_allclose(im.get_array(), att.numpy(), rtol=1e-6)
    assert [t.get_text() for t in heat_ax.get_xticklabels()] == list(fine)
    assert [t.get_text() for t in heat_ax.get_yticklabels()] == list(coarse)
    assert len(_colorbars(fig)) == 1
    # Labels in node order, node 0 at the top of its column.
    texts = {t.get_text(): t.get_position() for t in graph_ax.texts}
    ys = [texts[name][1] for name in fine]
    assert ys == sorted(ys, reverse=True)
    assert (tmp_path / "cs.png").stat().st_size > 100


def test_cross_scale_top_k_and_given_axes():
    att = np.random.default_rng(0).random((3, 6))
    att /= att.sum(1, keepdims=True)
    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot()
    out = plot_cross_scale(att, top_k=4, ax=ax)
    assert out is fig
    segs = _segments(ax, "cross_scale_edges")
    assert len(segs) == 4
    assert not ax.get_images()  # one Axes: no heatmap panel
    widths = np.sort(_by_gid(ax, "cross_scale_edges")[0].get_linewidths())
    assert widths[-1] == pytest.approx(4.0)  # the strongest edge is the widest
    fig2 = Figure(figsize=(4, 3))
    axes = fig2.subplots(1, 2)
    plot_cross_scale(att, ax=axes)
    assert axes[1].get_images()


def test_cross_scale_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N_c, N_f\).*att\[b, t\]"):
        plot_cross_scale(np.zeros((2, 3, 5, 17)))
    with pytest.raises(ValueError, match="fine_labels has 3 entries, expected 17"):
        plot_cross_scale(np.ones((5, 17)), fine_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="coarse_labels has 1 entries, expected 5"):
        plot_cross_scale(np.ones((5, 17)), coarse_labels=["a"])


@pytest.mark.parametrize("parts", [2, 4, 17])
def test_temporal_legend_clears_the_axis_labels(parts):
    T = 3
    adj = _distinct_symmetric(T * parts)
    fig = plot_temporal_graph(adj, T, parts, top_k=8)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # constrained layout places the legend
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
        assert not legend.overlaps(label.get_window_extent(renderer)), label.get_text()
    for tick in ax.get_xticklabels():
        assert not legend.overlaps(tick.get_window_extent(renderer)), tick.get_text()


def test_skeleton_colour_bar_of_equal_non_negative_weights_starts_at_zero():
    kp = prior_pose(64, 32)
    fig = plot_skeleton_graph(kp, np.full((17, 17), 0.5), COCO17, top_k=5)
    (bar,) = _colorbars(fig)
    lo, hi = bar.get_ylim()
    assert lo == 0.0 and hi == 0.5  # matplotlib alone would draw about 0.45 to 0.55, or
    # below 0 for zero weights
    fig = plot_skeleton_graph(kp, np.zeros((17, 17)), COCO17, top_k=5)
    (bar,) = _colorbars(fig)
    assert bar.get_ylim() == (0.0, 1.0)
