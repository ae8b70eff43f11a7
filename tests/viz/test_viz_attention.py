"""Attention figures: the maps drawn are the model's maps upsampled over the right frames."""

import numpy as np
import pytest
import torch
from torch import nn

from stgraph.models import get_model_class
from stgraph.models.base import VideoReIDModel, models_with_attention
from stgraph.nn.bnneck import BNNeck
from stgraph.viz import clip_to_images, plot_attention, plot_model_attention
from stgraph.viz.attention import bilinear_resize


class _Attentive(VideoReIDModel):
    """Two softmax maps per frame from a 1x1 conv, temporal scores softmaxed over frames."""

    def __init__(self, num_classes=4, backbone="resnet18", num_maps=2, temporal=True):
        super().__init__(num_classes, backbone=backbone)
        self.score = nn.Conv2d(self.feat_channels, num_maps, 1)
        self.necks = nn.ModuleList([BNNeck(self.feat_channels, num_classes)])
        self.temporal = temporal

    def attention_head(self, feature_maps):
        B, T = feature_maps.shape[:2]
        logits = self.score(feature_maps.flatten(0, 1)).unflatten(0, (B, T))  # (B, T, K, h, w)
        spatial = logits.flatten(-2).softmax(-1).view_as(logits)
        temporal = logits.mean((-2, -1)).softmax(1) if self.temporal else None
        return {"spatial": spatial, "temporal": temporal}

    def forward_head(self, feature_maps):
        att = self.attention_head(feature_maps)["spatial"].mean(2, keepdim=True)  # (B,T,1,h,w)
        feat = (feature_maps * att).sum((-2, -1)).mean(1)  # (B, C)
        return self._output(("global",), [feat], self.necks)


class _Plain(VideoReIDModel):
    def forward_head(self, feature_maps):
        raise NotImplementedError


def _clips(b=2, t=3):
    return torch.randn(b, t, 3, 64, 32, generator=torch.Generator().manual_seed(0))


def _inputs(T=3, K=2, h=4, w=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(T, 64, 32, 3), dtype=np.uint8)
    spatial = rng.random((T, K, h, w))
    spatial /= spatial.sum((-2, -1), keepdims=True)
    return images, spatial, rng.random((T, K))


@pytest.mark.parametrize("with_temporal", [True, False])
def test_grid_has_frames_maps_colorbars_and_the_temporal_panel(with_temporal):
    images, spatial, temporal = _inputs()
    fig = plot_attention(images, spatial, temporal if with_temporal else None, title="t",
                         dpi=40)
    T, K = 3, 2
    # T frames, T * K overlays, K colorbars (+ the temporal panel)
    assert len(fig.axes) == T + T * K + K + with_temporal
    for t in range(T):
        np.testing.assert_array_equal(fig.axes[t].images[0].get_array(), images[t])
        assert fig.axes[t].get_title() == f"frame {t}"
    for k in range(K):
        row = fig.axes[T + k * (T + 1): T + (k + 1) * (T + 1)]  # T overlays, then a colorbar
        for t in range(T):
            frame, heat = row[t].images
            np.testing.assert_array_equal(frame.get_array(), images[t])
            up = bilinear_resize(spatial[t, k], (64, 32))
            np.testing.assert_allclose(np.asarray(heat.get_array()), up, rtol=1e-6)
            assert heat.get_alpha() == 0.5
            assert heat.norm.vmin == 0.0
            assert heat.norm.vmax == pytest.approx(bilinear_resize(spatial[:, k],
                                                                   (64, 32)).max())
    if with_temporal:
        panel = fig.axes[-1]
        heights = np.array([p.get_height() for p in panel.patches]).reshape(K, T)
        np.testing.assert_allclose(heights, temporal.T)
        assert [x.get_text() for x in panel.get_xticklabels()] == ["frame 0", "frame 1",
                                                                   "frame 2"]
    assert fig._suptitle.get_text() == "t"


def test_saves_a_png_and_accepts_tensors(tmp_path):
    images, spatial, temporal = _inputs(T=2, K=1)
    out = tmp_path / "att.png"
    fig = plot_attention(torch.from_numpy(images), torch.from_numpy(spatial).float(),
                         torch.from_numpy(temporal), save=out, dpi=40)
    assert out.stat().st_size > 0 and len(fig.axes) == 2 + 2 + 1 + 1


def test_temporal_scores_need_not_match_the_maps():
    images, spatial, _ = _inputs(T=3, K=1)
    scores = np.arange(12.0).reshape(3, 4)  # STA: one map per frame, a score per row block
    fig = plot_attention(images, spatial, scores, dpi=40)
    panel = fig.axes[-1]
    heights = np.array([p.get_height() for p in panel.patches]).reshape(4, 3)
    np.testing.assert_array_equal(heights, scores.T)
    assert [t.get_text() for t in panel.get_legend().get_texts()] == [
        "score 0", "score 1", "score 2", "score 3"]
    fig = plot_attention(images, spatial, scores[:, 0], dpi=40)  # (T,): one per frame
    assert [p.get_height() for p in fig.axes[-1].patches] == [0.0, 4.0, 8.0]
    assert fig.axes[-1].get_legend() is None


def test_bilinear_resize_is_torch_bilinear_interpolation():
    x = torch.rand(2, 3, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for size in ((17, 9), (5, 4), (3, 2), (1, 1)):
        ref = torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(bilinear_resize(x, size), ref.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match=r"expected maps of shape \(\.\.\., h, w\)"):
        bilinear_resize(np.zeros(3), (2, 2))
    with pytest.raises(ValueError, match="size must be two ints"):
        bilinear_resize(np.zeros((2, 2)), (0, 2))


def test_bad_shapes_are_clear_errors():
    images, spatial, temporal = _inputs()
    with pytest.raises(ValueError, match=r"expected images of shape \(T, H, W, 3\)"):
        plot_attention(images[..., 0], spatial)
    with pytest.raises(ValueError, match=r"expected spatial of shape \(T, K, h, w\) with T = 3"):
        plot_attention(images, spatial[:2])
    with pytest.raises(ValueError, match=r"expected spatial of shape \(T, K, h, w\)"):
        plot_attention(images, spatial[:, 0])
    with pytest.raises(ValueError, match=r"expected temporal of shape \(T, K_t\) or \(T,\) "
                                         r"with T = 3"):
        plot_attention(images, spatial, temporal[:2])
    with pytest.raises(ValueError, match=r"expected temporal of shape \(T, K_t\)"):
        plot_attention(images, spatial, temporal[..., None])
    bad = spatial.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="spatial contains NaN"):
        plot_attention(images, bad)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        plot_attention(images, spatial, alpha=2)


def test_attention_maps_follow_the_contract():
    torch.manual_seed(0)
    model = _Attentive().eval()
    clips = _clips()
    with torch.no_grad():
        att = model.attention_maps(clips)
        fmap = model.forward_features(clips)
    spatial, temporal = att["spatial"], att["temporal"]
    assert spatial.shape == (2, 3, 2, 4, 2)  # resnet18, last stride 1: 64 x 32 / 16
    assert temporal.shape == (2, 3, 2)
    assert (spatial >= 0).all()
    torch.testing.assert_close(spatial.sum((-2, -1)), torch.ones(2, 3, 2))
    torch.testing.assert_close(spatial, model.attention_head(fmap)["spatial"])
    assert model.has_attention() and not _Plain.has_attention()


def test_a_model_without_attention_head_is_a_type_error_naming_it():
    model = _Plain(num_classes=3, backbone="resnet18")
    names = models_with_attention()
    with pytest.raises(TypeError, match=r"model _Plain has no attention maps; models with "
                                        r"attention: "):
        model.attention_maps(_clips())
    for name in names:  # exactly the registered classes that define attention_head
        assert callable(getattr(get_model_class(name), "attention_head", None))
    assert "tp" not in names and "_Attentive" not in names  # not registered


def test_a_head_breaking_the_contract_is_a_clear_error():
    model = _Attentive()
    model.attention_head = lambda fm: {"temporal": None}
    with pytest.raises(ValueError, match=r"must return a dict with 'spatial' of shape"):
        model.attention_maps(_clips())


def test_plot_model_attention_runs_in_eval_without_grad_and_restores_the_mode():
    torch.manual_seed(0)
    model = _Attentive(num_maps=1, temporal=False).train()
    seen = {}
    head = model.attention_head

    def spy(fm):
        seen.update(training=model.training, grad=torch.is_grad_enabled())
        return head(fm)

    model.attention_head = spy
    clips = _clips()
    fig = plot_model_attention(model, clips, clip_index=1, dpi=40)
    assert seen == {"training": False, "grad": False}
    assert model.training and all(m.training for m in model.modules())
    assert len(fig.axes) == 3 + 3 + 1  # no temporal panel
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(),
                                  clip_to_images(clips[1])[0])
    with torch.no_grad():
        model.eval()
        spatial = head(model.forward_features(clips))["spatial"][1]
    np.testing.assert_allclose(np.asarray(fig.axes[3].images[1].get_array()),
                               bilinear_resize(spatial[0, 0], (64, 32)), rtol=1e-5,
                               atol=1e-7)
    assert fig._suptitle.get_text() == "_Attentive attention, clip 1"
    # the mode is restored when the head fails too
    model.train()
    model.attention_head = lambda fm: 1 / 0
    with pytest.raises(ZeroDivisionError):
        plot_model_attention(model, clips)
    assert model.training
    with pytest.raises(ValueError, match="clip_index 2 out of range for 2 clips"):
        plot_model_attention(model, clips, clip_index=2)
    with pytest.raises(TypeError, match="model _Plain has no attention maps"):
        plot_model_attention(_Plain(num_classes=3, backbone="resnet18"), clips)
