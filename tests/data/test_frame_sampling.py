import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stgraph.data import sample_restricted_random
from stgraph.data import test_clip_indices as clip_indices  # aliased: not a test


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_restricted_random_one_frame_per_chunk(n, t, seed):
    idx = sample_restricted_random(n, t, torch.Generator().manual_seed(seed))
    assert idx.shape == (t,) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < n
    if n >= t:
        assert (idx[1:] > idx[:-1]).all(), "strictly increasing when n >= T"
        k = torch.arange(t)
        assert (idx >= k * n // t).all() and (idx < (k + 1) * n // t).all(), "inside chunk k"
    else:
        assert (idx[1:] >= idx[:-1]).all(), "sorted"
        assert idx.unique().tolist() == list(range(n)), "every frame used"


def test_restricted_random_reaches_every_frame_of_a_chunk():
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_restricted_random(12, 3, gen) for _ in range(300)])  # (300, 3)
    for k in range(3):
        assert sorted(draws[:, k].unique().tolist()) == list(range(4 * k, 4 * k + 4))


def test_restricted_random_short_tracklet_repeats():
    idx = sample_restricted_random(3, 8, torch.Generator().manual_seed(1))
    assert idx.tolist() == sorted(idx.tolist())
    assert set(idx.tolist()) == {0, 1, 2}
    assert sample_restricted_random(1, 4, torch.Generator()).tolist() == [0, 0, 0, 0]


def test_restricted_random_follows_the_generator():
    a = sample_restricted_random(100, 8, torch.Generator().manual_seed(7))
    b = sample_restricted_random(100, 8, torch.Generator().manual_seed(7))
    c = sample_restricted_random(100, 8, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 40))
def test_padded_clips_cover_every_frame_once_then_pad(n, t):
    idx = clip_indices(n, t, last_clip="pad")
    num_clips = -(-n // t)
    assert idx.shape == (num_clips, t)
    flat = idx.reshape(-1)
    assert torch.equal(flat[:n], torch.arange(n)), "all frames, in order, once"
    assert (flat[n:] == n - 1).all(), "padding repeats the last frame"
    assert (idx[:-1].reshape(-1) < n).all() and len(flat) - n < t, "only the last clip padded"


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 40))
def test_overlapping_last_clip_holds_only_real_frames(n, t):
    idx = clip_indices(n, t)  # the default
    pad = clip_indices(n, t, last_clip="pad")
    assert idx.shape == pad.shape
    assert torch.equal(idx[:-1], pad[:-1]), "every clip but the last as with padding"
    assert set(idx.reshape(-1).tolist()) == set(range(n)), "every frame, none other"
    if n >= t:
        assert torch.equal(idx[-1], torch.arange(n - t, n)), "the last t frames, no repeat"
    else:
        assert torch.equal(idx, pad), "a tracklet shorter than a clip is padded"


def test_clip_indices_by_hand():
    assert clip_indices(5, 2).tolist() == [[0, 1], [2, 3], [3, 4]]
    assert clip_indices(5, 4).tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert clip_indices(5, 2, last_clip="pad").tolist() == [[0, 1], [2, 3], [4, 4]]
    assert clip_indices(5, 4, last_clip="pad").tolist() == [[0, 1, 2, 3], [4, 4, 4, 4]]
    for last_clip in ("overlap", "pad"):
        assert clip_indices(4, 4, last_clip=last_clip).tolist() == [[0, 1, 2, 3]]
        assert clip_indices(1, 3, last_clip=last_clip).tolist() == [[0, 0, 0]]
        assert clip_indices(3, 4, last_clip=last_clip).tolist() == [[0, 1, 2, 2]]


def test_unknown_last_clip_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"last_clip must be one of 'overlap', 'pad', got 'wrap'"):
        clip_indices(5, 2, last_clip="wrap")


@pytest.mark.parametrize("fn", ["restricted", "clips"])
@pytest.mark.parametrize("n, t", [(0, 4), (5, 0), (-1, 2)])
def test_bad_lengths_raise(fn, n, t):
    with pytest.raises(ValueError, match="must be >= 1"):
        if fn == "restricted":
            sample_restricted_random(n, t, torch.Generator())
        else:
            clip_indices(n, t)


def test_clip_indices_is_not_collected_as_a_test():
    assert clip_indices.__test__ is False
