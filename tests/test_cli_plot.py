"""stgraph plot: every figure from a checkpoint, written to the path asked for."""

import pytest
import torch
from PIL import Image

from stgraph.checkpoint import METRIC_KEYS, save_checkpoint
from stgraph.cli import main
from stgraph.models import create_model

DATA = {"name": "synthetic", "num_train_ids": 4, "num_test_ids": 3, "image_size": [64, 32]}


def _checkpoint(tmp_path, name, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, backbone="resnet18", **kwargs)
    config = {"model": name, "model_kwargs": {"backbone": "resnet18", **kwargs},
              "num_classes": 4, "dataset": dict(DATA), "seq_len": 4, "height": 64,
              "width": 32}
    # written as stgraph train writes it (model arguments resolved), so loading it does not
    # warn that it predates them
    return save_checkpoint(tmp_path / f"{name}.pth", model, config,
                           dict.fromkeys(METRIC_KEYS, 0.0))


def _plot(ckpt, what, out, *extra):
    return main(["plot", "--checkpoint", str(ckpt), "--what", what, "--out", str(out),
                 "--workers", "0", "--no-progress", *extra])


@pytest.mark.parametrize("what", ["adjacency", "temporal", "skeleton", "cross-scale"])
def test_ctl_graph_figures(tmp_path, what):
    ckpt = _checkpoint(tmp_path, "ctl")
    out = tmp_path / "figs" / f"{what}.png"
    assert _plot(ckpt, what, out, "--index", "1", "--frame", "2") == 0
    with Image.open(out) as img:
        assert img.size[0] > 200 and img.size[1] > 200


def test_stgcn_figures_and_a_clear_error_for_skeleton(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "stgcn", seq_len=4, num_patches=2)
    for what in ("adjacency", "temporal"):
        assert _plot(ckpt, what, tmp_path / f"{what}.png") == 0
        assert (tmp_path / f"{what}.png").stat().st_size > 0
    assert _plot(ckpt, "skeleton", tmp_path / "s.png") == 2
    assert "needs a keypoint graph model" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_ranking_figure_and_bad_index(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "tp")
    assert _plot(ckpt, "ranking", tmp_path / "r.png", "--top-k", "3") == 0
    assert (tmp_path / "r.png").stat().st_size > 0
    assert _plot(ckpt, "ranking", tmp_path / "x.png", "--index", "9") == 2
    assert "--index 9 out of range: 3 queries" in capsys.readouterr().err
