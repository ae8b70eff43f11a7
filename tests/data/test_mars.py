import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from stgraph.data import MARS, create_dataset, load_clip

MARS_INFO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mars-info"
INFO_FILES = [
    "tracks_train_info.mat",
    "tracks_test_info.mat",
    "query_IDX.mat",
    "train_name.txt",
    "test_name.txt",
]


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    arr = np.zeros((8, 4, 3), dtype=np.uint8)
    arr[..., 0] = 200
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


JPEG = _jpeg_bytes()


def write_frames(paths):
    for p in paths:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_bytes(JPEG)


# --- the real index files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mars(tmp_path_factory):
    """A MARS root with the real info/ files and empty bbox folders (images built per test)."""
    if not all((MARS_INFO / f).is_file() for f in INFO_FILES):
        pytest.skip(f"real MARS index files not found at {MARS_INFO}")
    root = tmp_path_factory.mktemp("mars")
    (root / "info").mkdir()
    for f in INFO_FILES:
        shutil.copy(MARS_INFO / f, root / "info" / f)
    (root / "bbox_train").mkdir()
    (root / "bbox_test").mkdir()
    return root


@pytest.fixture(scope="module")
def torchreid_mars(real_mars):
    return MARS(real_mars)


@pytest.fixture(scope="module")
def official_mars(real_mars):
    return create_dataset("mars", root=real_mars, protocol="mars-official")


@pytest.mark.realdata
def test_real_counts_torchreid_protocol(torchreid_mars):
    ds = torchreid_mars
    assert ds.protocol == "torchreid"
    assert ds.num_train_pids == 625 and len(ds.train) == 8298 and ds.num_train_cams == 6
    assert len(ds.query) == 1980 and len({t.pid for t in ds.query}) == 626
    assert len(ds.gallery) == 9330
    gallery_pids = [t.pid for t in ds.gallery]
    assert -1 not in gallery_pids and gallery_pids.count(0) == 3248
    # 620 persons + the distractor label 0 (torchreid's summary says 622: it counts pids,
    # -1 included, before dropping the junk rows)
    assert len(set(gallery_pids)) == 621
    assert not {0, -1} & {t.pid for t in ds.query}
    assert len({t.pid for t in ds.query} - set(gallery_pids)) == 14
    frames = [sum(len(t.frames) for t in s) for s in (ds.train, ds.query, ds.gallery)]
    assert frames == [509914, 114493, 543216]
    assert {t.camid for t in ds.train + ds.query + ds.gallery} == set(range(6))
    text = ds.summary()
    assert re.search(r"train\s+\|\s+625 \|\s+8298 \|", text)
    assert re.search(r"gallery\s+\|\s+621 \|\s+9330 \|", text)


@pytest.mark.realdata
def test_real_gallery_is_the_rest_of_the_test_set_without_junk(torchreid_mars, official_mars):
    a, b = torchreid_mars, official_mars
    assert a.query == b.query and a.train == b.train
    assert len(b.gallery) == 12180
    pids = [t.pid for t in b.gallery]
    assert pids.count(-1) == 870 and pids.count(0) == 3248 and len(set(pids)) == 636
    assert sum(len(t.frames) for t in b.gallery) == 681089
    rows = b.query_rows
    assert len(rows) == 1980 and rows[0] == 4129  # query_IDX is 1-based: its first entry is 4130
    assert [b.gallery[i] for i in rows] == b.query
    is_query = np.zeros(12180, dtype=bool)
    is_query[rows] = True
    rest = [t for t, q in zip(b.gallery, is_query, strict=True) if not q]
    assert len(rest) == 10200  # 12180 - 1980, of which 870 are junk
    assert a.gallery == [t for t in rest if t.pid != -1]


@pytest.mark.realdata
def test_real_frame_paths_follow_torchreid(torchreid_mars, official_mars, real_mars):
    ds = torchreid_mars
    first = ds.train[0]
    assert len(first.frames) == 16 and first.pid == 0 and first.camid == 0
    assert first.frames[0] == str(real_mars / "bbox_train" / "0001" / "0001C1T0001F001.jpg")
    q = ds.query[0]
    assert q.pid == 2 and q.camid == 0
    assert q.frames[0] == str(real_mars / "bbox_test" / "0002" / "0002C1T0012F001.jpg")
    junk = official_mars.gallery[0]
    assert junk.pid == -1
    assert junk.frames[0] == str(real_mars / "bbox_test" / "00-1" / "00-1C1T0001F001.jpg")
    for t in (first, q, junk):
        for f in t.frames:
            name = Path(f).name
            assert Path(f).parent.name == name[:4] and int(name[5]) == t.camid + 1


@pytest.mark.realdata
def test_real_frames_are_read_when_used(torchreid_mars):
    ds = torchreid_mars
    built = ds.query[0].frames[:3]
    write_frames(built)
    img = ds.read_frame(built[1])
    assert img.mode == "RGB" and img.size == (4, 8) and img.getpixel((1, 1))[0] > 150
    clip = load_clip(ds, built, 16, 8)
    assert clip.shape == (3, 3, 16, 8)
    missing = ds.query[0].frames[3]
    with pytest.raises(FileNotFoundError, match=f"frame file not found: {re.escape(missing)}"):
        ds.read_frame(missing)


# --- a tiny synthetic tree: error handling without the real data -------------------------


def make_tiny_mars(root: Path) -> Path:
    """2 train persons (ids 3, 8), a test set with a junk, a distractor and 2 persons."""
    train_names = [f"0003C1T0001F{k:03d}.jpg" for k in range(1, 4)]
    train_names += [f"0003C2T0002F{k:03d}.jpg" for k in range(1, 3)]
    train_names += [f"0008C4T0001F{k:03d}.jpg" for k in range(1, 5)]
    train_info = [[1, 3, 3, 1], [4, 5, 3, 2], [6, 9, 8, 4]]
    test_names = [f"00-1C1T0001F{k:03d}.jpg" for k in range(1, 3)]
    test_names += [f"0000C2T0001F{k:03d}.jpg" for k in range(1, 3)]
    test_names += [f"0005C1T0001F{k:03d}.jpg" for k in range(1, 4)]
    test_names += [f"0005C3T0001F{k:03d}.jpg" for k in range(1, 3)]
    test_names += [f"0006C2T0001F{k:03d}.jpg" for k in range(1, 3)]
    test_names += [f"0006C6T0001F{k:03d}.jpg" for k in range(1, 3)]
    test_info = [[1, 2, -1, 1], [3, 4, 0, 2], [5, 7, 5, 1], [8, 9, 5, 3], [10, 11, 6, 2],
                 [12, 13, 6, 6]]  # fmt: skip
    info = root / "info"
    info.mkdir(parents=True)
    (root / "bbox_train").mkdir()
    (root / "bbox_test").mkdir()
    (info / "train_name.txt").write_text("\n".join(train_names) + "\n")
    (info / "test_name.txt").write_text("\n".join(test_names) + "\n")
    savemat(info / "tracks_train_info.mat", {"track_train_info": np.array(train_info, np.int32)})
    savemat(info / "tracks_test_info.mat", {"track_test_info": np.array(test_info, np.int32)})
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([[3, 5]], np.uint16)})
    return root


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_mars(tmp_path / "mars")


def test_tiny_subsets_under_both_protocols(tiny):
    ds = MARS(tiny)
    assert [(t.pid, t.camid, len(t.frames)) for t in ds.train] == [(0, 0, 3), (0, 1, 2), (1, 3, 4)]
    assert [(t.pid, t.camid) for t in ds.query] == [(5, 0), (6, 1)]
    assert [(t.pid, t.camid) for t in ds.gallery] == [(0, 1), (5, 2), (6, 5)]
    assert ds.train[2].frames[-1] == str(tiny / "bbox_train" / "0008" / "0008C4T0001F004.jpg")
    official = MARS(tiny, protocol="mars-official")
    assert [t.pid for t in official.gallery] == [-1, 0, 5, 5, 6, 6]
    assert official.gallery[0].frames == (
        str(tiny / "bbox_test" / "00-1" / "00-1C1T0001F001.jpg"),
        str(tiny / "bbox_test" / "00-1" / "00-1C1T0001F002.jpg"),
    )
    write_frames(official.gallery[0].frames)
    assert official.read_frame(official.gallery[0].frames[1]).size == (4, 8)


def test_unknown_protocol(tiny):
    with pytest.raises(ValueError, match="unknown protocol 'official'; choose one of: torchreid, "
                                         "mars-official"):  # fmt: skip
        MARS(tiny, protocol="official")


@pytest.mark.parametrize("name", INFO_FILES)
def test_missing_index_file_is_named(tiny, name):
    (tiny / "info" / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"MARS: missing index file .*info/{name}"):
        MARS(tiny)


@pytest.mark.parametrize("name", ["bbox_train", "bbox_test", "info"])
def test_missing_directory_is_named(tiny, name):
    shutil.rmtree(tiny / name)
    with pytest.raises(FileNotFoundError, match=f"MARS: missing directory .*mars/{name};"):
        MARS(tiny)


def test_missing_root_and_nested_root_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="MARS: missing directory .*nowhere"):
        MARS(tmp_path / "nowhere")
    make_tiny_mars(tmp_path / "data" / "mars")
    with pytest.raises(FileNotFoundError, match="holds the dataset: pass it as root"):
        MARS(tmp_path / "data")


def test_malformed_index_files_name_the_file(tiny):
    info = tiny / "info"
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([[3, 7]], np.uint16)})
    with pytest.raises(ValueError, match=r"query_IDX.mat entry 2 is 7, outside the 6 rows"):
        MARS(tiny)
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([[3, 3]], np.uint16)})
    with pytest.raises(ValueError, match="more than once"):
        MARS(tiny)
    savemat(info / "query_IDX.mat", {"query": np.array([[3]], np.uint16)})
    with pytest.raises(ValueError, match=r"query_IDX.mat holds no variable 'query_IDX'"):
        MARS(tiny)
    (info / "query_IDX.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match="cannot read .*query_IDX.mat as a MATLAB file"):
        MARS(tiny)


def test_info_rows_inconsistent_with_names(tiny):
    info = tiny / "info"
    rows = np.array([[1, 3, 3, 1], [4, 6, 3, 2], [7, 9, 8, 4]], np.int32)  # row 2 spans 2 persons
    savemat(info / "tracks_train_info.mat", {"track_train_info": rows})
    with pytest.raises(ValueError, match=r"names 4..6 of .*train_name.txt \(row 2 .*mix persons"):
        MARS(tiny)
    rows = np.array([[1, 3, 3, 1], [4, 5, 3, 2], [6, 10, 8, 4]], np.int32)
    savemat(info / "tracks_train_info.mat", {"track_train_info": rows})
    with pytest.raises(ValueError, match=r"row 3 .* ends at frame 10, but .* lists 9 names"):
        MARS(tiny)
    rows = np.array([[1, 3, 3, 7]], np.int32)
    savemat(info / "tracks_train_info.mat", {"track_train_info": rows})
    with pytest.raises(ValueError, match="row 1 has camera 7; MARS cameras are 1..6"):
        MARS(tiny)
    savemat(info / "tracks_train_info.mat", {"track_train_info": np.ones((2, 3), np.int32)})
    with pytest.raises(ValueError, match=r"must hold an \(n, 4\) array"):
        MARS(tiny)
