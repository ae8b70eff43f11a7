import math

import pytest
import torch
from torch.utils.data import DataLoader

from stgraph.data import (
    PKSampler,
    SyntheticReID,
    TestClipDataset,
    TrainClipDataset,
    load_clip,
    make_generator,
    sample_restricted_random,
)
from stgraph.data import test_clip_indices as clip_indices  # aliased: not a test

LENGTHS = [3, 10, 25, 7, 16, 1, 9, 40]


def starts(ds):
    out, s = [], 0
    for t in ds.train:
        out.append(s)
        s += len(t.frames)
    return out


def test_train_item_is_restricted_random_from_seed_epoch_index(frame_code):
    FrameCodeDataset, decode_frames = frame_code
    ds = FrameCodeDataset(LENGTHS)
    train = TrainClipDataset(ds, seq_len=4, height=6, width=4, seed=3, flip=False,
                             pad=0, erasing=0.0)  # decode_frames needs the plain frames
    train.set_epoch(2)
    assert len(train) == len(LENGTHS)
    for i, (n, s) in enumerate(zip(LENGTHS, starts(ds), strict=True)):
        item = train[i]
        assert item["clip"].shape == (4, 3, 6, 4)
        assert (item["pid"], item["camid"], item["index"]) == (i, i % 2, i)
        expected = sample_restricted_random(n, 4, make_generator(3, 2, i))
        assert decode_frames(item["clip"]) == [s + j for j in expected.tolist()]


def test_train_same_seed_epoch_index_gives_identical_clip_and_epochs_differ():
    syn = SyntheticReID(num_train_ids=4, num_test_ids=1, min_frames=8, max_frames=12)
    a = TrainClipDataset(syn, 4, 64, 32, seed=1)
    b = TrainClipDataset(syn, 4, 64, 32, seed=1)
    for i in range(len(a)):
        assert torch.equal(a[i]["clip"], b[i]["clip"])
    first = [a[i]["clip"] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(first[i], a[i]["clip"]) for i in range(len(a)))
    other_seed = TrainClipDataset(syn, 4, 64, 32, seed=2)
    assert any(not torch.equal(first[i], other_seed[i]["clip"]) for i in range(len(a)))


def test_train_flip_decision_is_a_fair_coin_per_item():
    decisions = []
    for i in range(200):
        gen = make_generator(0, 0, i)
        sample_restricted_random(5, 2, gen)
        decisions.append(bool(torch.rand((), generator=gen) < 0.5))
    assert 70 < sum(decisions) < 130


def test_train_flip_on_a_real_image_matches_load_clip_flip():
    syn = SyntheticReID(num_train_ids=6, num_test_ids=1)
    train = TrainClipDataset(syn, 3, 32, 16, seed=0, flip=True, pad=0, erasing=0.0)
    seen = set()
    for i in range(len(train)):
        gen = make_generator(0, 0, i)
        idx = sample_restricted_random(len(syn.train[i].frames), 3, gen)
        flip = bool(torch.rand((), generator=gen) < 0.5)
        keys = [syn.train[i].frames[j] for j in idx.tolist()]
        assert torch.equal(train[i]["clip"], load_clip(syn, keys, 32, 16, flip=flip))
        seen.add(flip)
    assert seen == {True, False}


def test_train_loader_is_reproducible_with_workers(frame_code):
    FrameCodeDataset, _ = frame_code
    ds = FrameCodeDataset([12] * 16, pids=[i // 2 for i in range(16)])
    train = TrainClipDataset(ds, 4, 6, 4, seed=9)
    sampler = PKSampler(train.pids, batch_ids=4, batch_instances=2, seed=9)

    def run(workers):
        loader = DataLoader(train, batch_size=8, sampler=sampler, num_workers=workers)
        return [(b["clip"], b["index"]) for b in loader]

    serial, parallel = run(0), run(2)
    assert len(serial) == 2
    for (c0, i0), (c1, i1) in zip(serial, parallel, strict=True):
        assert torch.equal(i0, i1) and torch.equal(c0, c1)
        assert c0.shape == (8, 4, 3, 6, 4)


@pytest.mark.parametrize("last_clip", ["overlap", "pad"])
def test_test_dataset_covers_every_frame_in_clips(frame_code, last_clip):
    FrameCodeDataset, decode_frames = frame_code
    ds = FrameCodeDataset(LENGTHS)
    test = TestClipDataset(ds, ds.train, seq_len=4, height=6, width=4, last_clip=last_clip)
    assert test.num_tracklets == len(LENGTHS)
    assert len(test) == sum(math.ceil(n / 4) for n in LENGTHS)
    assert test.pids.tolist() == list(range(len(LENGTHS)))
    assert test.camids.tolist() == [i % 2 for i in range(len(LENGTHS))]
    seen = {n: [] for n in range(len(LENGTHS))}
    for j in range(len(test)):
        item = test[j]
        assert item["clip"].shape == (4, 3, 6, 4)
        assert item["tracklet"] == int(test.clip_tracklet[j])
        seen[item["tracklet"]].append(decode_frames(item["clip"]))
    for n, (length, s) in enumerate(zip(LENGTHS, starts(ds), strict=True)):
        expected = (clip_indices(length, 4, last_clip) + s).tolist()
        assert seen[n] == expected  # clips in order, all frames, the last as last_clip says
    ten = starts(ds)[1]  # the 10-frame tracklet: clips 0-3, 4-7 and 6-9 or 8, 9, 9, 9
    last = {"overlap": [6, 7, 8, 9], "pad": [8, 9, 9, 9]}[last_clip]
    assert seen[1][-1] == [ten + k for k in last]


def test_test_dataset_batches_average_back_per_tracklet(frame_code):
    FrameCodeDataset, _ = frame_code
    ds = FrameCodeDataset(LENGTHS)
    test = TestClipDataset(ds, ds.train, seq_len=8, height=6, width=4)
    feats = torch.zeros(test.num_tracklets)
    for batch in DataLoader(test, batch_size=5):
        feats.index_add_(0, batch["tracklet"], torch.ones(len(batch["tracklet"])))
    assert torch.equal(feats, test.clip_tracklet.bincount().float())


def test_index_errors_and_bad_sizes(frame_code):
    FrameCodeDataset, _ = frame_code
    ds = FrameCodeDataset([4, 4])
    with pytest.raises(IndexError, match="out of range"):
        TrainClipDataset(ds, 2, 4, 4)[2]
    with pytest.raises(IndexError, match="out of range"):
        TestClipDataset(ds, ds.train, 2, 4, 4)[4]
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        TrainClipDataset(ds, 0, 4, 4)
    with pytest.raises(ValueError, match="width must be >= 1"):
        TestClipDataset(ds, ds.train, 2, 4, 0)
    with pytest.raises(ValueError, match="TestClipDataset: last_clip must be one of"):
        TestClipDataset(ds, ds.train, 2, 4, 4, last_clip="repeat")


def test_reprs(frame_code):
    FrameCodeDataset, _ = frame_code
    ds = FrameCodeDataset([4, 5])
    assert repr(TrainClipDataset(ds, 4, 8, 4, seed=2)) == (
        "TrainClipDataset(frame_code, len=2, seq_len=4, size=(8, 4), seed=2)"
    )
    assert repr(TestClipDataset(ds, ds.train, 4, 8, 4)) == (
        "TestClipDataset(frame_code, tracklets=2, clips=3, seq_len=4, size=(8, 4), "
        "last_clip='overlap')"
    )
