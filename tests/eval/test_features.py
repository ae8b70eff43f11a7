"""Tests of stgraph.eval.extract_features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stgraph.eval import extract_features


class MeanPixel(nn.Module):
    """Fake model: embedding = per-channel mean over frames and pixels, (B, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)  # gives the model a mode and a device
        self.seen_training: list[bool] = []

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen_training.append(self.training)
        return {"embedding": clip.mean(dim=(1, 3, 4))}


def clip_of(values: tuple[float, float, float], t: int = 2) -> torch.Tensor:
    """A (T, 3, 4, 2) clip whose channel c is the constant values[c]."""
    return torch.tensor(values).view(1, 3, 1, 1).expand(t, 3, 4, 2).clone()


# tracklet 0: clips (1,2,3), (3,0,5); tracklet 1: (0,0,0); tracklet 2: (2,2,2), (-1,4,0), (5,1,1)
CLIPS = {
    0: [(1.0, 2.0, 3.0), (3.0, 0.0, 5.0)],
    1: [(0.0, 0.0, 0.0)],
    2: [(2.0, 2.0, 2.0), (-1.0, 4.0, 0.0), (5.0, 1.0, 1.0)],
}
MEAN = torch.tensor([[2.0, 1.0, 4.0], [0.0, 0.0, 0.0], [2.0, 7 / 3, 1.0]])
MAX = torch.tensor([[3.0, 2.0, 5.0], [0.0, 0.0, 0.0], [5.0, 4.0, 2.0]])


def make_loader(batch_size: int, order: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """Batches of (tracklet, clip number) pairs in the given, interleaved order."""
    items = [(tid, clip_of(CLIPS[tid][k])) for tid, k in order]
    return [{"clip": torch.stack([c for _, c in items[s : s + batch_size]]),
             "tracklet": torch.tensor([tid for tid, _ in items[s : s + batch_size]])}
            for s in range(0, len(items), batch_size)]


ORDER = [(2, 0), (0, 1), (1, 0), (2, 2), (0, 0), (2, 1)]


@pytest.mark.parametrize("batch_size", [1, 4, 6])
def test_mean_and_max_by_hand(batch_size):
    loader = make_loader(batch_size, ORDER)
    model = MeanPixel()
    torch.testing.assert_close(extract_features(model, loader, 3), MEAN)
    torch.testing.assert_close(extract_features(model, loader, 3, pool="max"), MAX)


def test_mode_restored_and_eval_used():
    model = MeanPixel().train()
    extract_features(model, make_loader(2, ORDER), 3, device="cpu")
    assert model.training and not any(model.seen_training)
    model.eval()
    extract_features(model, make_loader(2, ORDER), 3)
    assert not model.training


def test_mode_restored_after_error_and_no_grad():
    model = MeanPixel().train()
    with pytest.raises(ValueError, match="tracklet index 7 out of range for num_tracklets=3"):
        extract_features(model, make_loader(2, [(0, 0), (1, 0)]) + [
            {"clip": clip_of((1.0, 1.0, 1.0))[None], "tracklet": torch.tensor([7])}], 3)
    assert model.training
    loader = make_loader(3, ORDER)
    loader[0]["clip"].requires_grad_()
    assert not extract_features(model, loader, 3).requires_grad


def test_tracklet_without_clip():
    loader = make_loader(2, [(0, 0), (2, 1)])
    with pytest.raises(ValueError, match=r"2 of 4 tracklets received no clip: indices \[1, 3\]"):
        extract_features(MeanPixel(), loader, 4)


def test_bad_arguments():
    model = MeanPixel()
    with pytest.raises(ValueError, match="unknown pool 'median'; choose one of: mean, max"):
        extract_features(model, [], 3, pool="median")
    with pytest.raises(ValueError, match="num_tracklets must be >= 1"):
        extract_features(model, [], 0)

    class Plain(nn.Module):
        def forward(self, clip):
            return clip.mean(dim=(1, 3, 4))

    with pytest.raises(TypeError, match="'embedding'"):
        extract_features(Plain(), make_loader(2, ORDER), 3)


def test_progress_bar_runs(capsys):
    out = extract_features(MeanPixel(), make_loader(2, ORDER), 3, progress=True)
    torch.testing.assert_close(out, MEAN)
    assert "features" in capsys.readouterr().err
