"""The examples run and show what they claim (each ``main(argv)`` with small arguments)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """The examples set the thread count (``--threads``); leave the session as it was."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def _assert_pngs(paths, names):
    assert sorted(p.name for p in paths) == sorted(names)
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p
        assert p.read_bytes()[:8] == PNG_MAGIC, p


def _assert_metrics(metrics, out):
    for key in ("rank1", "rank5", "mAP"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert metrics["rank1"] <= metrics["rank5"]
    m = re.search(r"rank-1 (\S+)  rank-5 (\S+)  mAP (\S+)", out)
    assert m is not None, out
    assert float(m[1]) == pytest.approx(metrics["rank1"], abs=1e-4)
    assert float(m[3]) == pytest.approx(metrics["mAP"], abs=1e-4)


def test_layers_example_dense_equals_sparse(capsys):
    diff = _load("stgcn_layers_in_your_model").main(["--channels", "32"])
    assert diff < 1e-5
    assert "2 graphs, 32 nodes, 512 edges" in capsys.readouterr().out


def test_layers_in_your_model_dense_equals_sparse(capsys):
    diffs = _load("layers_in_your_model").main([])
    assert set(diffs) == {"patch", "keypoint"}
    assert all(d < 1e-4 for d in diffs.values()), diffs
    out = capsys.readouterr().out
    assert "PatchGraphHead:" in out and "KeypointGraphHead:" in out
    assert "logits (2, 10)" in out
    assert torch.get_default_dtype() == torch.float32


def test_layers_in_your_model_double_agrees_to_rounding():
    diffs = _load("layers_in_your_model").main(["--double", "--channels", "16"])
    assert all(d < 1e-10 for d in diffs.values()), diffs
    assert torch.get_default_dtype() == torch.float32  # restored by the example


def test_build_graphs(capsys):
    res = _load("build_graphs").main(["--height", "64", "--width", "32"])
    out = capsys.readouterr().out
    B, T, P = 2, 4, 4
    assert tuple(res["feature_maps"].shape) == (B, T, 512, 4, 2)
    assert tuple(res["patch_dense"].shape) == (B, T * P, 512)
    batch = res["patch_batch"]
    assert batch.num_graphs == B and batch.num_nodes == B * T * P
    assert tuple(batch.edge_index.shape) == (2, B * (T * P) ** 2)
    assert res["spatial_batch"].num_graphs == B * T
    assert "patch graph, temporal: Batch of 2 graphs, 32 nodes, x (32, 512), " \
           "edge_index (2, 512)" in out
    assert tuple(res["heatmaps"].shape) == (B, T, 17, 4, 2)
    for s, n in (("s1", 17), ("s2", 10), ("s3", 5)):
        assert tuple(res["parts"][s].shape) == (B, T, n, 512)
        kb = res["keypoint_batches"][s]
        assert kb.num_graphs == B and kb.num_nodes == B * T * n
        assert int(kb.frame.max()) == T - 1 and int(kb.part.max()) == n - 1
        assert set(kb.scale.tolist()) == {("s1", "s2", "s3").index(s)}
        assert f"keypoint graph {s} ({n} nodes" in out
    assert out.count("to_dense(batch) == dense: True") == 4
    assert "each summing to 1: True" in out


def test_build_graphs_random_feature_maps(capsys):
    res = _load("build_graphs").main(["--backbone", "none", "--channels", "8", "--frames", "2"])
    assert tuple(res["parts"]["s1"].shape) == (2, 2, 17, 8)
    assert "random feature maps (2, 2, 8, 8, 4)" in capsys.readouterr().out


@pytest.mark.slow
def test_train_stgcn_then_plot_its_checkpoint(tmp_path, capsys):
    from stgraph.cli import load_checkpoint

    ckpt = tmp_path / "stgcn.pth"
    metrics = _load("train_stgcn").main(["--epochs", "1", "--ids", "8", "--test-ids", "4",
                                         "--save", str(ckpt)])
    out = capsys.readouterr().out
    _assert_metrics(metrics, out)
    assert metrics["num_query"] == 4 and metrics["num_gallery"] == 4
    assert "epoch 1/1  loss" in out and f"wrote {ckpt}" in out
    model, cfg = load_checkpoint(ckpt)  # the format of stgraph train
    assert cfg["model"] == "stgcn" and cfg["num_classes"] == 8
    assert cfg["dataset"]["num_test_ids"] == 4

    figs = tmp_path / "figs"
    written = _load("plot_learned_topology").main(["--checkpoint", str(ckpt),
                                                   "--out", str(figs)])
    _assert_pngs(written, ["stgcn_adjacency.png", "stgcn_temporal.png", "stgcn_spatial.png"])
    assert f"loaded stgcn from {ckpt}" in capsys.readouterr().out


@pytest.mark.slow
def test_train_ctl_with_keypoints(tmp_path, capsys):
    metrics = _load("train_ctl").main(["--epochs", "1", "--ids", "8", "--test-ids", "4",
                                       "--num-layers", "1"])
    out = capsys.readouterr().out
    _assert_metrics(metrics, out)
    assert "takes_keypoints(model) = True" in out
    assert "clip (16, 4, 3, 64, 32), keypoints (16, 4, 17, 3)" in out
    assert re.search(r"epoch 1/1 .* div \d", out)


@pytest.mark.slow
def test_plot_learned_topology_trains_a_tiny_ctl(tmp_path, capsys):
    written = _load("plot_learned_topology").main(
        ["--out", str(tmp_path / "figs"), "--epochs", "1", "--height", "64", "--width", "32"])
    _assert_pngs(written, ["ctl_adjacency_s1.png", "ctl_skeleton_s1.png", "ctl_skeleton_s2.png",
                           "ctl_temporal_s3.png", "ctl_cross_scale_s1.png",
                           "ctl_cross_scale_s2.png"])
    out = capsys.readouterr().out
    assert "recorded graphs: gcls.s1.0 (1, 4, 51, 51)" in out
    assert "cs_gcls.s1 (1, 4, 5, 17)" in out


def test_embed_folder_ranks_the_same_person_first(tmp_path, capsys):
    res = _load("embed_folder").main(["--out", str(tmp_path / "top5.png"), "--ids", "3"])
    assert res["num_tracklets"] == 6 and len(res["ranked"]) == 5
    dists = [d for _, d in res["ranked"]]
    assert dists == sorted(dists) and dists[0] > 0
    # the demo query 0001_c0's other camera is nearest, even for the untrained model
    assert res["query"].endswith("_c0") and res["ranked"][0][0] == res["query"][:-1] + "1"
    _assert_pngs([tmp_path / "top5.png"], ["top5.png"])
    assert "embedded 6 tracklets" in capsys.readouterr().out
