import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from stgraph.data import PRID2011, TestClipDataset, create_dataset, load_clip

# persons 1-4 in both cameras, 5 only in cam_b (like PRID-2011's cam_b-only persons)
LEN_A = {1: 3, 2: 5, 3: 2, 4: 4}
LEN_B = {1: 4, 2: 1, 3: 6, 4: 3, 5: 2}


@pytest.fixture
def tree(tmp_path, prid_tree):
    make_prid_tree, _ = prid_tree
    return make_prid_tree(tmp_path / "prid", LEN_A, LEN_B)


def write_split(path, splits):
    path.write_text(json.dumps(splits))
    return path


def test_split_by_names(tree, tmp_path):
    split = write_split(
        tmp_path / "s.json",
        [{"train": ["person_0001", "person_0003"], "test": ["person_0002", "person_0004"]}],
    )
    ds = PRID2011(tree, split_file=split)
    assert ds.num_train_pids == 2 and ds.num_train_cams == 2
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.train] == [
        (0, 0, 3), (0, 1, 4), (1, 0, 2), (1, 1, 6),
    ]  # fmt: skip
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.query] == [(2, 0, 5), (4, 0, 4)]
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.gallery] == [(2, 1, 1), (4, 1, 3)]
    frames = ds.train[1].frames
    assert list(frames) == sorted(frames), "frames in name order"
    assert frames[0].endswith("cam_b/person_0001/0001.png")
    # frame k of cam_b person 1 has value 10 + k + 100
    assert ds.read_frame(frames[2]).getpixel((0, 0)) == (113, 56, 142)


def test_split_by_ints_equals_split_by_names(tree, tmp_path):
    names = write_split(tmp_path / "n.json", [{"train": ["person_0001"], "test": ["person_0002"]}])
    ints = write_split(tmp_path / "i.json", [{"train": [1], "test": [2]}])
    a, b = PRID2011(tree, split_file=names), PRID2011(tree, split_file=ints)
    assert a.train == b.train and a.query == b.query and a.gallery == b.gallery


def test_split_id_selects_the_split(tree, tmp_path):
    split = write_split(
        tmp_path / "s.json",
        [{"train": [1, 2], "test": [3, 4]}, {"train": [3, 4], "test": [1, 2]}],
    )
    ds = PRID2011(tree, split_file=split, split_id=1)
    assert [t.pid for t in ds.query] == [1, 2]
    assert {f.split("/")[-2] for t in ds.train for f in t.frames} == {"person_0003", "person_0004"}


def test_jpg_frames_any_case(tmp_path, prid_tree):
    make_prid_tree, write_frame = prid_tree
    root = make_prid_tree(tmp_path / "j", {1: 2, 2: 2}, {1: 3, 2: 2}, ext=".jpg")
    write_frame(root / "multi_shot" / "cam_a" / "person_0001" / "0003.JPEG", 200)
    (root / "multi_shot" / "cam_a" / "person_0001" / "notes.txt").write_text("not a frame")
    ds = PRID2011(root, split_file=write_split(tmp_path / "s.json", [{"train": [1], "test": [2]}]))
    assert len(ds.train[0].frames) == 3 and ds.train[0].frames[-1].endswith("0003.JPEG")
    clip = load_clip(ds, ds.train[0].frames, 16, 8)
    assert clip.shape == (3, 3, 16, 8)


def test_random_split_is_seeded_disjoint_and_uses_persons_in_both_cameras(tree):
    splits = []
    for split_id in range(10):
        ds = PRID2011(tree, split_id=split_id)
        train = {f.split("/")[-2] for t in ds.train for f in t.frames}
        test = {t.pid for t in ds.query}
        assert len(train) == 2 and len(test) == 2
        assert {int(n[-4:]) for n in train} | test == {1, 2, 3, 4}, "person 5 is cam_b only"
        assert {t.pid for t in ds.gallery} == test
        splits.append(frozenset(test))
    again = PRID2011(tree, split_id=3)
    assert frozenset(t.pid for t in again.query) == splits[3]
    assert len(set(splits)) > 1, "split_id changes the split"


def test_summary_and_registry(tree):
    ds = create_dataset("prid2011", root=tree)
    text = ds.summary()
    assert re.search(r"train\s+\|\s+2 \|\s+4 \|", text)
    assert re.search(r"query\s+\|\s+2 \|\s+2 \|", text)


@pytest.mark.parametrize("remove, missing", [
    ("", "prid"),
    ("multi_shot", "multi_shot"),
    ("multi_shot/cam_a", "multi_shot/cam_a"),
    ("multi_shot/cam_b", "multi_shot/cam_b"),
])  # fmt: skip
def test_missing_directories_are_named(tree, remove, missing):
    shutil.rmtree(tree / remove)
    with pytest.raises(FileNotFoundError, match=f"PRID2011: missing directory .*{missing}"):
        PRID2011(tree)


def test_root_one_level_too_deep_gets_a_hint(tree):
    with pytest.raises(FileNotFoundError, match="pass its parent as root"):
        PRID2011(tree / "multi_shot")


@pytest.mark.parametrize("content, split_id, match", [
    ("", 0, "is empty"),
    ("  \n", 0, "is empty"),
    ("{not json", 0, "is not valid JSON"),
    ('{"train": [1], "test": [2]}', 0, "must hold a list of"),
    ("[[1, 2]]", 0, "must hold a list of"),
    ('[{"train": [1]}]', 0, "must hold a list of"),
    ("[]", 0, "empty list of splits"),
    ('[{"train": [1], "test": [2]}]', 1, r"split_id=1 out of range: .* holds 1 split\(s\)"),
    ('[{"train": "person_0001", "test": [2]}]', 0, "'train' must be a list"),
    ('[{"train": [1.5], "test": [2]}]', 0, "entries must be person directory names"),
    ('[{"train": [1], "test": []}]', 0, "empty 'test' list"),
    ('[{"train": [1, 2], "test": [2]}]', 0, "in both train and test"),
])  # fmt: skip
def test_bad_split_files_raise_value_error_naming_the_file(
    tree, tmp_path, content, split_id, match
):
    path = tmp_path / "bad_split.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        PRID2011(tree, split_file=path, split_id=split_id)
    assert str(path) in str(info.value)


def test_negative_split_id_is_out_of_range(tree, tmp_path):
    path = write_split(tmp_path / "s.json", [{"train": [1], "test": [2]}])
    with pytest.raises(ValueError, match="split_id=-1 out of range"):
        PRID2011(tree, split_file=path, split_id=-1)


def test_missing_split_file(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="split file .*nope.json not found"):
        PRID2011(tree, split_file=tmp_path / "nope.json")


def test_person_in_split_missing_on_disk_is_named(tree, tmp_path):
    path = write_split(tmp_path / "s.json", [{"train": [1], "test": [5]}])  # 5: cam_b only
    with pytest.raises(FileNotFoundError, match=r"person_0005.*no directory .*cam_a/person_0005"):
        PRID2011(tree, split_file=path)
    path = write_split(tmp_path / "s.json", [{"train": ["person_0099"], "test": [2]}])
    with pytest.raises(FileNotFoundError, match="person_0099"):
        PRID2011(tree, split_file=path)


def test_person_without_frames_is_named(tree, tmp_path):
    empty = tree / "multi_shot" / "cam_a" / "person_0007"
    empty.mkdir()
    PRID2011(tree)  # an unused empty directory is ignored
    (tree / "multi_shot" / "cam_b" / "person_0007").mkdir()
    path = write_split(tmp_path / "s.json", [{"train": [7], "test": [2]}])
    with pytest.raises(ValueError, match=r"cam_a/person_0007.*has no \.png/\.jpg frames"):
        PRID2011(tree, split_file=path)


def test_unreadable_and_missing_frames_name_the_path(tree):
    ds = PRID2011(tree)
    bad = ds.train[0].frames[0]
    with open(bad, "wb") as f:
        f.write(b"this is not a png")
    with pytest.raises(OSError, match=f"cannot read frame {re.escape(bad)}"):
        ds.read_frame(bad)
    gone = ds.query[0].frames[0]
    Path(gone).unlink()
    with pytest.raises(FileNotFoundError, match=f"frame file not found: {re.escape(gone)}"):
        ds.read_frame(gone)
    with pytest.raises(OSError, match=re.escape(bad)):
        load_clip(ds, [bad], 8, 4)


@pytest.mark.realdata
def test_real_cuhk03_pair1_counts(real_data):
    root = real_data / "cuhk03-pair1"
    ds = PRID2011(root, split_file=root / "splits.json")
    assert ds.num_train_pids == 743 and ds.num_train_cams == 2
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (1486, 100, 100)
    assert {t.pid for t in ds.query} == {t.pid for t in ds.gallery} == set(range(744, 844))
    assert {t.camid for t in ds.query} == {0} and {t.camid for t in ds.gallery} == {1}
    frames = [sum(len(t.frames) for t in s) for s in (ds.train, ds.query, ds.gallery)]
    assert frames == [7239, 451, 487] and sum(frames) == 8177  # 8177 crops in keypoints.json
    assert min(len(t.frames) for t in ds.train + ds.query + ds.gallery) == 1
    assert max(len(t.frames) for t in ds.train + ds.query + ds.gallery) == 5
    # real crops vary in size: resized to the model input, clips of T=4 cover all frames
    clip = load_clip(ds, ds.query[0].frames, 256, 128)
    assert clip.shape == (5, 3, 256, 128)
    assert -2.2 < float(clip.min()) and float(clip.max()) < 2.7 and clip.std() > 0.2
    img = np.asarray(ds.read_frame(ds.gallery[0].frames[0]))
    assert img.ndim == 3 and img.shape[2] == 3 and 44 <= img.shape[1] <= 161
    test = TestClipDataset(ds, ds.query, seq_len=4, height=256, width=128)
    assert len(test) == sum(-(-len(t.frames) // 4) for t in ds.query)
