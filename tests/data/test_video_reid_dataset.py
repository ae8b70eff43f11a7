import re

import pytest

from stgraph.data import Tracklet, VideoReIDDataset


def make(train_pids=(0, 1, 1), query=(), gallery=()):
    train = [Tracklet((f"/x/{i}.png",), pid, i % 2) for i, pid in enumerate(train_pids)]
    return VideoReIDDataset(train, list(query), list(gallery))


def test_counts():
    ds = make(train_pids=(0, 1, 1, 2))
    assert ds.num_train_pids == 3 and ds.num_train_cams == 2
    assert ds.frame_keypoints("/x/0.png") is None
    assert repr(ds) == "VideoReIDDataset(train=4, query=0, gallery=0, num_train_pids=3)"


def test_tracklets_are_normalised_to_tuples_of_ints():
    ds = VideoReIDDataset([(["a", "b"], 0, 1)], [(("c",), 7, 0)], [])
    assert ds.train == [Tracklet(("a", "b"), 0, 1)] and ds.query[0].pid == 7
    assert isinstance(ds.train[0].frames, tuple)


def test_train_pids_must_be_contiguous():
    with pytest.raises(ValueError, match=r"relabelled to 0..1, got \[0, 2\]"):
        make(train_pids=(0, 2))


def test_empty_tracklet_is_rejected():
    with pytest.raises(ValueError, match=r"query\[1\] \(pid 5, camid 0\) has no frames"):
        make(query=[Tracklet(("a",), 4, 0), Tracklet((), 5, 0)])


def test_summary_table():
    q = [Tracklet(("a", "b", "c"), 9, 0)]
    g = [Tracklet(("d",), 9, 1), Tracklet(("e", "f"), 8, 1)]
    text = make(train_pids=(0, 1, 1), query=q, gallery=g).summary()
    assert re.search(r"train\s+\|\s+2 \|\s+3 \|\s+3 \|\s+1 / 1.0 / 1", text)
    assert re.search(r"query\s+\|\s+1 \|\s+1 \|\s+3 \|\s+3 / 3.0 / 3", text)
    assert re.search(r"gallery\s+\|\s+2 \|\s+2 \|\s+3 \|\s+1 / 1.5 / 2", text)
    assert "# ids" in text and "# tracklets" in text and "# frames" in text


def test_read_frame_errors_name_the_path(tmp_path):
    ds = make()
    with pytest.raises(FileNotFoundError, match="frame file not found: /x/0.png"):
        ds.read_frame("/x/0.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(OSError, match=f"cannot read frame {re.escape(str(bad))}"):
        ds.read_frame(str(bad))
