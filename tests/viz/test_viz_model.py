"""plot_model_graph draws exactly the graph the model built for the clip asked for."""

import numpy as np
import pytest
import torch

from stgraph.models import CTL, STGCN, record_graphs
from stgraph.viz import clip_to_images, plot_model_graph

SMALL = {"backbone": "resnet18", "num_classes": 4}


def _clips(b=2, t=4):
    return torch.randn(b, t, 3, 64, 32, generator=torch.Generator().manual_seed(0))


def test_adjacency_heatmap_is_the_recorded_window_of_the_chosen_clip_and_frame():
    torch.manual_seed(0)
    model = CTL(**SMALL).eval()
    clips = _clips()
    with torch.no_grad(), record_graphs(model) as graphs:
        model(clips)
    fig = plot_model_graph(model, clips, "adjacency", clip_index=1, frame=3, dpi=50)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, graphs["gcls.s1.0"][1, 3].numpy(), rtol=1e-5, atol=1e-6)
    assert fig.axes[0].get_title() == "gcls.s1.0, window of frame 3"


def test_cross_scale_heatmap_and_stgcn_temporal_graph_values():
    torch.manual_seed(0)
    model = CTL(**SMALL).eval()
    clips = _clips()
    with torch.no_grad(), record_graphs(model) as graphs:
        model(clips)
    fig = plot_model_graph(model, clips, "cross-scale", clip_index=0, frame=1, dpi=50)
    heat = [ax for ax in fig.axes if ax.images]
    np.testing.assert_allclose(np.asarray(heat[0].images[0].get_array()),
                               graphs["cs_gcls.s1"][0, 1].numpy(), rtol=1e-5, atol=1e-6)
    stgcn = STGCN(seq_len=4, num_patches=2, **SMALL).eval()
    with pytest.raises(ValueError, match="needs a keypoint graph model"):
        plot_model_graph(stgcn, clips, "skeleton")
    with pytest.raises(ValueError, match="frame 4 out of range for clips of 4 frames"):
        plot_model_graph(model, clips, "adjacency", frame=4)


def test_clip_to_images_inverts_the_normalisation():
    from stgraph.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    img = np.arange(2 * 4 * 3 * 3, dtype=np.uint8).reshape(2, 4, 3, 3) * 3  # (T, H, W, 3)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    np.testing.assert_array_equal(clip_to_images(x), img)
    with pytest.raises(ValueError, match=r"expected a clip of shape \(T, 3, H, W\)"):
        clip_to_images(torch.zeros(3, 4, 4))
