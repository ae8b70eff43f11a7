import json

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from stgraph.data.synthetic import SyntheticReID
from stgraph.viz import plot_cmc, plot_ranking
from stgraph.viz.ranking import MATCH_COLOR, MISMATCH_COLOR


@pytest.fixture(scope="module")
def tracklets():
    ds = SyntheticReID(num_train_ids=1, num_test_ids=3, min_frames=3, max_frames=5,
                       image_size=(32, 16))

    def frames(t):
        return np.stack([np.asarray(ds.read_frame(f)) for f in t.frames])  # (T, H, W, 3) uint8

    query = ds.query[0]
    return ds, query, frames(query), [(g.pid, frames(g)) for g in ds.gallery]


# ---------------------------------------------------------------------------- ranking


def test_ranking_frames_coloured_by_match(tracklets, tmp_path):
    ds, query, q_frames, gallery = tracklets
    G = len(gallery)
    pids = torch.tensor([pid for pid, _ in gallery])
    # Gallery as float (T, 3, H, W) tensors in [0, 1]; distances put a wrong match first.
    gal = [torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255 for _, f in gallery]
    dist = torch.linspace(0.1, 0.9, G)
    dist[int((pids == query.pid).nonzero()[0])] = 0.5
    fig = plot_ranking(q_frames, gal, dist, query_pid=query.pid, gallery_pids=pids, top_k=3,
                       save=tmp_path / "rank.png", dpi=30)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # query + top 3
    order = np.argsort(dist.numpy(), kind="stable")[:3]
    for ax, g in zip(fig.axes[1:], order, strict=True):
        colour = MATCH_COLOR if pids[g] == query.pid else MISMATCH_COLOR
        for spine in ax.spines.values():
            assert spine.get_edgecolor() == to_rgba(colour)
        assert ax.get_xlabel() == f"d = {float(dist[g]):.3g}"
        assert f"pid {int(pids[g])}" in ax.get_title()
    colours = [fig.axes[r].spines["left"].get_edgecolor() for r in (1, 2, 3)]
    assert colours.count(to_rgba(MATCH_COLOR)) == int((pids[order] == query.pid).sum()) == 1
    assert fig.axes[0].get_title().startswith("query")
    assert fig.axes[0].get_images()
    data = (tmp_path / "rank.png").read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 100


def test_ranking_montage_and_inputs(tracklets):
    ds, query, q_frames, gallery = tracklets
    frames = [ds.read_frame(f) for f in query.frames]  # list of PIL images
    gal5 = np.stack([f[:3] for _, f in gallery])  # (G, T, H, W, 3)
    fig = plot_ranking(frames, gal5, np.arange(len(gallery)), top_k=10, max_frames=2)
    assert len(fig.axes) == 1 + len(gallery)  # top_k capped at G
    (im,) = fig.axes[0].get_images()
    h, w = q_frames.shape[1:3]
    assert im.get_array().shape == (h, 2 * w + 2, 3)  # two frames side by side, 2 px gap
    # Without identities every panel is framed grey.
    edge = {fig.axes[k].spines["top"].get_edgecolor() for k in range(1, len(fig.axes))}
    assert edge == {to_rgba("0.4")}


def test_ranking_bad_inputs_raise(tracklets):
    _, _, q_frames, gallery = tracklets
    gal = [f for _, f in gallery]
    with pytest.raises(ValueError, match=rf"distances of shape \({len(gal)},\)"):
        plot_ranking(q_frames, gal, np.zeros(len(gal) + 1))
    with pytest.raises(ValueError, match=rf"gallery_pids of shape \({len(gal)},\)"):
        plot_ranking(q_frames, gal, np.zeros(len(gal)), 1, [1])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) or \(T, 3, H, W\)"):
        plot_ranking(np.zeros((2, 8, 5, 7)), gal, np.zeros(len(gal)))
    with pytest.raises(ValueError, match="undo the normalisation"):
        plot_ranking(q_frames / 255.0 - 0.5, gal, np.zeros(len(gal)))
    with pytest.raises(ValueError, match=r"\(G, T, H, W, 3\)"):
        plot_ranking(q_frames, np.zeros((2, 8, 4, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        plot_ranking(q_frames, gal, np.zeros(len(gal)), top_k=0)


# ---------------------------------------------------------------------------- CMC


def test_cmc_lines_equal_input_and_legend(tmp_path):
    a = {"cmc": np.linspace(0.4, 1.0, 50), "mAP": 0.5}
    b = torch.linspace(0.2, 0.8, 10)
    fig = plot_cmc([a, b], labels=["stgcn", "tp"], max_rank=20, figsize=(3, 2),
                   save=tmp_path / "cmc.png", dpi=30)
    ax = fig.axes[0]
    la, lb = ax.get_lines()
    np.testing.assert_array_equal(la.get_xdata(), np.arange(1, 21))
    np.testing.assert_allclose(la.get_ydata(), a["cmc"][:20])
    np.testing.assert_array_equal(lb.get_xdata(), np.arange(1, 11))
    np.testing.assert_allclose(lb.get_ydata(), b.numpy())
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["stgcn: R1 40.0%, mAP 50.0%", "tp: R1 20.0%"]
    assert (tmp_path / "cmc.png").read_bytes()[:4] == b"\x89PNG"


def test_cmc_from_metrics_json_and_rank_keys(tmp_path):
    run = tmp_path / "syn-stgcn"
    run.mkdir()
    metrics = {"rank1": 0.5, "rank5": 0.75, "rank10": 1.0, "rank20": 1.0, "mAP": 0.6,
               "cmc": [0.5, 0.6, 0.7, 0.7, 0.75] + [1.0] * 45}
    (run / "metrics.json").write_text(json.dumps(metrics))
    old = {k: v for k, v in metrics.items() if k != "cmc"}  # no curve: rank-k points only
    fig = plot_cmc([run / "metrics.json", old], max_rank=10, figsize=(3, 2))
    la, lb = fig.axes[0].get_lines()
    np.testing.assert_allclose(la.get_ydata(), metrics["cmc"][:10])
    np.testing.assert_array_equal(lb.get_xdata(), [1, 5, 10])
    np.testing.assert_allclose(lb.get_ydata(), [0.5, 0.75, 1.0])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["syn-stgcn: R1 50.0%, mAP 60.0%", "run 1: R1 50.0%, mAP 60.0%"]
    # One run alone (a dict, a path to the folder, or a list of numbers) is one line.
    for single in (metrics, run, [0.5, 0.9]):
        assert len(plot_cmc(single, figsize=(3, 2)).axes[0].get_lines()) == 1


def test_cmc_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"shape \(R,\)"):
        plot_cmc([np.ones((2, 3))])
    with pytest.raises(ValueError, match="fractions in"):
        plot_cmc([np.array([40.0, 60.0])])
    with pytest.raises(ValueError, match="labels has 1 entries for 2 runs"):
        plot_cmc([np.ones(3), np.ones(3)], labels=["a"])
    with pytest.raises(ValueError, match="neither 'cmc'"):
        plot_cmc([{"mAP": 0.3}])
    with pytest.raises(ValueError, match="max_rank must be an int >= 1"):
        plot_cmc([np.ones(3)], max_rank=0)
