"""stgraph.eval.evaluate: a model's query/gallery evaluation, and ranking features or a
distance matrix (values by hand on a tiny gallery)."""

from types import SimpleNamespace as T

import pytest
import torch

from stgraph.eval import (
    evaluate,
    evaluate_with_distances,
    feature_distances,
    format_table,
    rank_distances,
    rank_features,
)


def _tracks(pids, cams):
    return [T(pid=p, camid=c) for p, c in zip(pids, cams, strict=True)]


def test_rank_distances_by_hand():
    # query 0 (pid 0): its match is 2nd nearest -> rank-1 miss, AP 1/2;
    # query 1 (pid 1): its match is nearest -> AP 1
    dist = torch.tensor([[0.1, 0.2, 0.9], [0.5, 0.3, 0.1]])
    query, gallery = _tracks([0, 1], [0, 0]), _tracks([2, 0, 1], [1, 1, 1])
    m = rank_distances(dist, query, gallery, metric="euclidean")
    assert m["rank1"] == pytest.approx(0.5) and m["rank5"] == pytest.approx(1.0)
    assert m["mAP"] == pytest.approx((0.5 + 1.0) / 2)
    assert (m["num_query"], m["num_gallery"], m["metric"]) == (2, 3, "euclidean")
    table = format_table(m)
    assert "2 queries vs 3 gallery tracklets" in table and " 50.00%" in table


def test_rank_features_is_rank_distances_of_feature_distances():
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(4, 8, generator=g), torch.randn(6, 8, generator=g)
    query, gallery = _tracks([0, 1, 2, 3], [0] * 4), _tracks([0, 1, 2, 3, 4, 5], [1] * 6)
    for metric in ("cosine", "euclidean"):
        dist = feature_distances(qf, gf, metric=metric)
        assert dist.shape == (4, 6)
        assert rank_features(qf, gf, query, gallery, metric=metric) == rank_distances(
            dist, query, gallery, metric=metric)
    near = torch.cat([qf, torch.randn(2, 8, generator=g)])  # gallery = the queries + 2
    assert rank_features(qf, near, query, gallery)["rank1"] == 1.0


def test_evaluate_with_distances_returns_the_matrix_it_ranked():
    from small_models import H, W, small_model
    from small_models import T as SEQ

    from stgraph.data import SyntheticReID

    data = SyntheticReID(num_train_ids=2, num_test_ids=3, min_frames=3, max_frames=6,
                         image_size=(H, W), seed=1)
    model = small_model("tp", num_classes=2).eval()
    metrics, dist = evaluate_with_distances(model, data, SEQ, H, W, progress=False)
    assert dist.shape == (len(data.query), len(data.gallery))
    assert metrics == evaluate(model, data, SEQ, H, W, progress=False)
    assert metrics == {**rank_distances(dist, data.query, data.gallery), "last_clip": "overlap"}
