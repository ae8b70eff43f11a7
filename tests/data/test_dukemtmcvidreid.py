import re
import shutil

import pytest

from stgraph.data import DukeMTMCVidReID, create_dataset, load_clip

# subset -> person -> [(tracklet folder, camera, number of frames, first frame number)]
TREE = {
    "train": {
        1: [("0001", 6, 3, 1), ("0002", 2, 2, 1)],
        12: [("0001", 1, 4, 2)],  # numbering starts at F0002
    },
    "query": {5: [("0001", 1, 2, 1)], 7: [("0001", 8, 3, 1)]},
    "gallery": {
        5: [("0002", 2, 2, 1), ("0003", 3, 1, 1)],
        7: [("0002", 4, 2, 1)],
        99: [("0001", 5, 2, 1)],  # a distractor identity
    },
}


@pytest.fixture
def tree(tmp_path, prid_tree):
    _, write_frame = prid_tree
    root = tmp_path / "DukeMTMC-VideoReID"
    for subset, persons in TREE.items():
        for pid, tracklets in persons.items():
            for folder, cam, n, first in tracklets:
                for k in reversed(range(first, first + n)):
                    name = f"{pid:04d}_C{cam}_F{k:04d}_X{10000 + k:05d}.jpg"
                    write_frame(root / subset / f"{pid:04d}" / folder / name, 10 * cam + k)
    return root


def test_subsets_pids_and_cameras(tree):
    ds = DukeMTMCVidReID(tree)
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.train] == [
        (0, 5, 3), (0, 1, 2), (1, 0, 4),
    ]  # fmt: skip
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.query] == [(5, 0, 2), (7, 7, 3)]
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.gallery] == [
        (5, 1, 2), (5, 2, 1), (7, 3, 2), (99, 4, 2),
    ]  # fmt: skip
    frames = ds.train[2].frames
    assert list(frames) == sorted(frames) and frames[0].endswith(
        "train/0012/0001/0012_C1_F0002_X10002.jpg"
    )
    assert frames[-1].endswith("F0005_X10005.jpg"), "no frame lost when numbering starts at 2"
    # frame k of camera c has value 10 c + k (JPEG: give or take a little)
    assert abs(ds.read_frame(ds.query[1].frames[2]).getpixel((0, 0))[0] - 83) <= 2
    assert load_clip(ds, ds.gallery[0].frames, 16, 8).shape == (2, 3, 16, 8)
    assert ds.num_empty_tracklets == 0


def test_registry_and_summary(tree):
    ds = create_dataset("dukemtmcvidreid", root=tree)
    text = ds.summary()
    assert re.search(r"train\s+\|\s+2 \|\s+3 \|\s+9 \|", text)
    assert re.search(r"gallery\s+\|\s+3 \|\s+4 \|", text)


def test_old_frame_naming(tmp_path, prid_tree):
    _, write_frame = prid_tree
    for subset in ("train", "query", "gallery"):
        write_frame(tmp_path / subset / "0003" / "0001" / "0003C4F0001X00001.jpg", 5)
    ds = DukeMTMCVidReID(tmp_path)
    assert ds.train[0].camid == 3 and ds.query[0].pid == 3


@pytest.mark.parametrize("remove", ["", "train", "query", "gallery"])
def test_missing_directories_are_named(tree, remove):
    shutil.rmtree(tree / remove)
    missing = re.escape(str(tree / remove).rstrip("/"))
    with pytest.raises(FileNotFoundError, match=f"DukeMTMCVidReID: missing directory {missing}"):
        DukeMTMCVidReID(tree)


def test_nested_root_gets_a_hint(tree):
    with pytest.raises(FileNotFoundError, match="holds the dataset: pass it as root"):
        DukeMTMCVidReID(tree.parent)


def test_bad_names_are_named(tree, prid_tree):
    _, write_frame = prid_tree
    bad = tree / "query" / "0005" / "0009" / "frame_0001.jpg"
    write_frame(bad, 1)
    expected = f"cannot read the camera from frame name {re.escape(str(bad))}"
    with pytest.raises(ValueError, match=expected):
        DukeMTMCVidReID(tree)
    shutil.rmtree(bad.parent)
    (tree / "gallery" / "notes").mkdir()
    with pytest.raises(ValueError, match=r"person folder .*gallery/notes is not named by a number"):
        DukeMTMCVidReID(tree)


def test_empty_tracklet_folders_are_skipped_with_a_warning(tree):
    (tree / "gallery" / "0007" / "0009").mkdir()
    (tree / "gallery" / "0007" / "0009" / "notes.txt").write_text("no frames")
    with pytest.warns(UserWarning, match=r"1 tracklet folder\(s\) under .*gallery have no frames"):
        ds = DukeMTMCVidReID(tree)
    assert len(ds.gallery) == 4 and ds.num_empty_tracklets == 1
