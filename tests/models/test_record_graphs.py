"""Graphs out of a model without editing it: the recorded graphs are the forward's own."""

import pytest
import torch

from stgraph.models import CTL, STGCN, record_graphs
from stgraph.nn import affinity_adjacency

SMALL = {"backbone": "resnet18", "num_classes": 4}


def _clips(b=2, t=4, seed=0):
    return torch.randn(b, t, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


def test_stgcn_graphs_are_the_layers_adjacency_per_clip():
    torch.manual_seed(0)
    model = STGCN(seq_len=4, num_patches=2, **SMALL).eval()
    clips = _clips()
    with record_graphs(model) as graphs:
        out = model(clips)
    assert set(graphs) == {"temporal.convs.0", "temporal.convs.1", "spatial.convs.0",
                           "spatial.convs.1"}
    assert graphs["temporal.convs.0"].shape == (2, 8, 8)  # T * P nodes per clip
    assert graphs["spatial.convs.0"].shape == (8, 2, 2)  # one graph per frame
    # the first temporal layer's graph, recomputed by hand from the patch nodes
    with torch.no_grad():
        x = model.builder.dense(model.forward_features(clips))
        conv = model.temporal.convs[0]
        want = affinity_adjacency(conv.phi(x))
    torch.testing.assert_close(graphs["temporal.convs.0"], want, atol=1e-5, rtol=1e-4)
    # recording changes nothing: same outputs, hooks removed afterwards
    with torch.no_grad():
        again = model(clips)
    torch.testing.assert_close(out["embedding"], again["embedding"])
    assert all(not m._forward_hooks for m in model.modules())


def test_training_mode_statistics_are_untouched_and_passes_concatenate():
    torch.manual_seed(0)
    model = CTL(**SMALL)  # train mode: batch norms update their running statistics
    ref = CTL(**SMALL)
    ref.load_state_dict(model.state_dict())
    clips = _clips()
    with record_graphs(model) as graphs:
        model(clips)
        model(clips)
    ref(clips)
    ref(clips)
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)  # the extra calls left no trace
    assert graphs["gcls.s1.0"].shape == (4, 4, 3 * 17, 3 * 17)  # 2 passes x 2 clips
    att = graphs["cs_gcls.s2"]
    assert att.shape == (4, 4, 5, 10)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 4, 5))


def test_sparse_models_have_nothing_to_record():
    model = STGCN(seq_len=4, num_patches=2, backend="pyg", **SMALL)
    with pytest.raises(ValueError, match="rebuild it with a dense backend"):
        with record_graphs(model):
            pass
