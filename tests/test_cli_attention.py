"""stgraph plot --what attention: a figure for models with attention, a clear error otherwise."""

import pytest
import torch
from PIL import Image
from torch import nn

from stgraph.cli import main
from stgraph.models import create_model, list_models
from stgraph.models import registry as model_registry
from stgraph.models.base import VideoReIDModel
from stgraph.nn.bnneck import BNNeck

DATA = {"name": "synthetic", "num_train_ids": 4, "num_test_ids": 3, "image_size": [64, 32]}
TINY = ["--backbone", "resnet18", "--height", "64", "--width", "32", "--seq-len", "4",
        "--batch-ids", "4", "--batch-instances", "2", "--workers", "0", "--no-progress"]


class _Attentive(VideoReIDModel):
    """One softmax map per frame from a 1x1 conv; temporal scores softmaxed over frames."""

    def __init__(self, num_classes, backbone="resnet50", last_stride=1, pretrained=None):
        super().__init__(num_classes, backbone, last_stride, pretrained)
        self.score = nn.Conv2d(self.feat_channels, 1, 1)
        self.necks = nn.ModuleList([BNNeck(self.feat_channels, num_classes)])

    def attention_head(self, feature_maps):
        B, T = feature_maps.shape[:2]
        logits = self.score(feature_maps.flatten(0, 1)).unflatten(0, (B, T))  # (B, T, 1, h, w)
        return {"spatial": logits.flatten(-2).softmax(-1).view_as(logits),
                "temporal": logits.mean((-2, -1)).softmax(1)}

    def forward_head(self, feature_maps):
        att = self.attention_head(feature_maps)["spatial"]
        return self._output(("global",), [(feature_maps * att).sum((-2, -1)).mean(1)],
                            self.necks)


def _checkpoint(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, backbone="resnet18")
    config = {"model": name, "model_kwargs": {"backbone": "resnet18"}, "num_classes": 4,
              "dataset": dict(DATA), "seq_len": 4, "height": 64, "width": 32,
              "model_kwargs_resolved": True}
    path = tmp_path / f"{name}.pth"
    torch.save({"config": config, "state_dict": model.state_dict()}, path)
    return path


def _plot(ckpt, out, *extra):
    return main(["plot", "--checkpoint", str(ckpt), "--what", "attention", "--out", str(out),
                 "--workers", "0", "--no-progress", *extra])


def test_attention_figure_of_a_model_with_attention(tmp_path, monkeypatch):
    monkeypatch.setitem(model_registry._MODELS, "_attentive", _Attentive)
    out = tmp_path / "figs" / "attention.png"
    assert _plot(_checkpoint(tmp_path, "_attentive"), out, "--index", "2") == 0
    with Image.open(out) as img:
        assert img.size[0] > 200 and img.size[1] > 300


def test_a_model_without_attention_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "a.png"
    assert _plot(_checkpoint(tmp_path, "tp"), out) == 2
    err = capsys.readouterr().err
    assert err.startswith("stgraph: error: --what attention: model TemporalPooling has no "
                          "attention maps; models with attention: ")
    assert "Traceback" not in err and not out.exists()


ATTENTION_MODELS = ["sta", "drsta", "rru"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_train_then_plot_attention(tmp_path, name):
    if name not in list_models():
        pytest.skip(f"model {name!r} is not registered")
    run = tmp_path / "run"
    assert main(["train", "--model", name, "--dataset", "synthetic", "--epochs", "1",
                 "--output", str(run), *TINY]) == 0
    out = tmp_path / f"{name}.png"
    assert _plot(run / "checkpoint.pth", out, "--index", "1") == 0
    with Image.open(out) as img:
        assert img.size[0] > 200 and img.size[1] > 300
