import json
import re
import shutil
import warnings

import numpy as np
import pytest
from scipy.io import savemat

from stgraph.data import ILIDSVID, create_dataset

# person number -> frames per camera (persons 1..6 and 9; 7 is cam1 only)
LENGTHS = {1: (3, 2), 2: (2, 4), 3: (4, 3), 4: (2, 2), 5: (3, 5), 6: (1, 2), 9: (2, 3)}


@pytest.fixture
def tree(tmp_path, prid_tree):
    _, write_frame = prid_tree
    root = tmp_path / "ilids-vid"
    seq = root / "i-LIDS-VID" / "sequences"
    for person, lengths in LENGTHS.items():
        for cam, n in zip(("cam1", "cam2"), lengths, strict=True):
            for k in reversed(range(n)):  # reverse: directory order is not name order
                name = f"{cam}_person{person:03d}_{k * 7 + 101:05d}.png"
                write_frame(seq / cam / f"person{person:03d}" / name, 20 * person + k)
    write_frame(seq / "cam1" / "person007" / "cam1_person007_00001.png", 1)
    (seq / "cam2").mkdir(exist_ok=True)
    return root


def test_splits_are_created_saved_and_reused(tree):
    split_file = tree / "splits_ilidsvid.json"
    assert not split_file.exists()
    ds = ILIDSVID(tree)
    assert ds.splits_created and split_file.is_file()
    splits = json.loads(split_file.read_text())
    both = ["person001", "person002", "person003", "person004", "person005", "person006",
            "person009"]  # fmt: skip
    assert len(splits) == 10
    for s in splits:
        assert len(s["train"]) == 4 and len(s["test"]) == 3
        assert sorted(s["train"] + s["test"]) == both, "person007 is in cam1 only"
    assert len({tuple(s["test"]) for s in splits}) > 1, "the splits differ"
    again = ILIDSVID(tree)
    assert not again.splits_created and split_file.read_text() == json.dumps(splits, indent=1)
    assert (again.train, again.query, again.gallery) == (ds.train, ds.query, ds.gallery)
    # made again from scratch: the same seeded splits
    split_file.unlink()
    fresh = ILIDSVID(tree, split_id=3)
    assert json.loads(split_file.read_text()) == splits
    assert sorted(t.pid for t in fresh.query) == [int(p[-3:]) for p in splits[3]["test"]]


def test_subsets_follow_the_split(tree, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"train": ["person003", "person001"], "test": ["person009", 2]}]))
    ds = create_dataset("ilidsvid", root=tree, split_file=path)
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.train] == [
        (0, 0, 3), (0, 1, 2), (1, 0, 4), (1, 1, 3),
    ]  # fmt: skip
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.query] == [(2, 0, 2), (9, 0, 2)]
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.gallery] == [(2, 1, 4), (9, 1, 3)]
    frames = ds.train[0].frames
    assert list(frames) == sorted(frames) and frames[0].endswith(
        "sequences/cam1/person001/cam1_person001_00101.png"
    )
    # frame k of person p has value 20 p + k
    assert ds.read_frame(ds.gallery[1].frames[2]).getpixel((0, 0))[0] == 20 * 9 + 2
    assert not (tree / "splits_ilidsvid.json").exists(), "an explicit split file is only read"
    assert re.search(r"query\s+\|\s+2 \|\s+2 \|", ds.summary())


def test_split_id_out_of_range(tree):
    with pytest.raises(ValueError, match=r"split_id=10 out of range: .* holds 10 split\(s\), "
                                         r"choose split_id in 0..9"):  # fmt: skip
        ILIDSVID(tree, split_id=10)
    with pytest.raises(ValueError, match="split_id=-1 out of range"):
        ILIDSVID(tree, split_id=-1)


def test_split_file_argument_is_created_and_reused(tree, tmp_path):
    path = tmp_path / "elsewhere" / "my_splits.json"
    ds = ILIDSVID(tree, split_file=path, split_id=2)
    assert ds.splits_created and path.is_file() and not (tree / "splits_ilidsvid.json").exists()
    assert not ILIDSVID(tree, split_file=path, split_id=2).splits_created


def test_official_mat_split_is_used_when_present(tree):
    shutil.rmtree(tree / "i-LIDS-VID" / "sequences" / "cam1" / "person007")
    # 1-based indices into the sorted persons 001..006, 009; first half test, rest train
    ls_set = np.array([[7, 2, 5, 1, 3, 4], [1, 2, 3, 4, 5, 6]], dtype=np.float64)
    mat = tree / "train-test people splits" / "train_test_splits_ilidsvid.mat"
    mat.parent.mkdir()
    savemat(mat, {"ls_set": ls_set})
    ds = ILIDSVID(tree)
    splits = json.loads((tree / "splits_ilidsvid.json").read_text())
    assert splits == [
        {"train": ["person001", "person003", "person004"],
         "test": ["person002", "person005", "person009"]},
        {"train": ["person004", "person005", "person006"],
         "test": ["person001", "person002", "person003"]},
    ]  # fmt: skip
    assert [t.pid for t in ds.query] == [2, 5, 9] and ds.num_train_pids == 3


def test_mat_split_needs_every_person_in_both_cameras(tree):
    mat = tree / "train-test people splits" / "train_test_splits_ilidsvid.mat"
    mat.parent.mkdir()
    savemat(mat, {"ls_set": np.array([[1, 2]])})
    with pytest.raises(ValueError, match="in one camera only .*person007"):
        ILIDSVID(tree)


def test_unwritable_split_file_warns_and_still_loads(tree, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot save the splits to .*a_file/s.json"):
        ds = ILIDSVID(tree, split_file=blocker / "s.json")
    assert len(ds.query) == 3


SEQ = "i-LIDS-VID/sequences"


@pytest.mark.parametrize("remove", ["", "i-LIDS-VID", SEQ, f"{SEQ}/cam1", f"{SEQ}/cam2"])
def test_missing_directories_are_named(tree, remove):
    shutil.rmtree(tree / remove)
    missing = re.escape(str(tree / remove).rstrip("/"))
    with pytest.raises(FileNotFoundError, match=f"ILIDSVID: missing directory {missing}"):
        ILIDSVID(tree)


def test_root_too_deep_gets_a_hint(tree):
    with pytest.raises(FileNotFoundError, match="holds sequences itself: pass its parent as root"):
        ILIDSVID(tree / "i-LIDS-VID")


@pytest.mark.parametrize("content, match", [
    ("", "is empty"),
    ("{bad", "is not valid JSON"),
    ('{"train": [], "test": []}', "must hold a list of"),
    ("[]", "empty list of splits"),
    ('[{"train": [1], "test": []}]', "empty 'test' list"),
    ('[{"train": [1.5], "test": [2]}]', "must be a list of person folder names"),
    ('[{"train": [1, 2], "test": ["person002"]}]', "in both train and test"),
])  # fmt: skip
def test_bad_split_files_name_the_file(tree, tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        ILIDSVID(tree, split_file=path)
    assert str(path) in str(info.value)


def test_split_persons_missing_or_empty_are_named(tree, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"train": [7], "test": [1]}]))
    with pytest.raises(FileNotFoundError, match=r"person007.*no directory .*cam2/person007"):
        ILIDSVID(tree, split_file=path)
    (tree / "i-LIDS-VID" / "sequences" / "cam2" / "person007").mkdir()
    with pytest.raises(ValueError, match=r"cam2/person007.*has no \.png/\.jpg frames"):
        ILIDSVID(tree, split_file=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ILIDSVID(tree)  # random splits skip persons without frames in both cameras
