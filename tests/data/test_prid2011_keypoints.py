"""PRID2011 with a COCO keypoint results file: matched frames, counted fallbacks, errors."""

import json
import warnings

import numpy as np
import pytest

from stgraph.data import PRID2011
from stgraph.graph.keypoints import prior_pose


def _entry(image_id, value=1.0, n=17):
    kps = []
    for k in range(n):
        kps += [value + k, 2 * value + k, 0.5]
    return {"image_id": image_id, "category_id": 1, "keypoints": kps, "score": 0.9}


@pytest.fixture
def tree(tmp_path, prid_tree):
    make, _ = prid_tree
    # persons 1, 2 in both cameras, 2 frames each; frames are 4 x 8 (W x H) images
    return make(tmp_path / "prid", {1: 2, 2: 2}, {1: 2, 2: 2})


def _write(path, entries):
    path.write_text(json.dumps(entries))
    return path


def test_matched_frames_return_the_file_values_and_missing_ones_the_prior(tree, tmp_path):
    entries = [_entry(f"multi_shot/{c}/person_{p:04d}/{k:04d}.png", value=10 * p + k)
               for c in ("cam_a", "cam_b") for p in (1, 2) for k in (1, 2)]
    dropped = entries.pop(0)  # cam_a person_0001 frame 1 has no keypoints
    entries.append(_entry("multi_shot/cam_a/person_0009/0001.png"))  # matches no frame
    kp_file = _write(tmp_path / "kp.json", entries)
    with pytest.warns(UserWarning) as record:
        ds = PRID2011(tree, keypoints=kp_file)
    messages = " ".join(str(w.message) for w in record)
    assert "1 of 8 frames have no keypoints" in messages
    assert "1 entries of" in messages and "match no frame" in messages
    assert ds.num_keypoint_fallbacks == 1 and ds.num_unmatched_keypoints == 1
    key = str(tree / "multi_shot" / "cam_b" / "person_0002" / "0002.png")
    kp = ds.frame_keypoints(key)
    assert kp.shape == (17, 3)
    np.testing.assert_allclose(kp[3], [22 + 3, 44 + 3, 0.5])
    missing = str(tree / dropped["image_id"])
    np.testing.assert_allclose(ds.frame_keypoints(missing), prior_pose(8, 4))


def test_without_a_file_there_are_no_keypoints(tree):
    ds = PRID2011(tree)
    assert ds.frame_keypoints(ds.train[0].frames[0]) is None


def test_a_file_for_another_root_is_an_error(tree, tmp_path):
    kp_file = _write(tmp_path / "kp.json", [_entry("elsewhere/0001.png")])
    with pytest.raises(ValueError, match=r"none of the 1 entries of keypoints file .*kp\.json"):
        PRID2011(tree, keypoints=kp_file)


@pytest.mark.parametrize("bad, pattern", [
    (lambda e: e.update(keypoints=e["keypoints"][:-3]), r"kp\.json: entry 0 .*length 48"),
    (lambda e: e["keypoints"].__setitem__(4, float("nan")), r"kp\.json: entry 0 .*non-finite"),
])
def test_malformed_keypoints_name_the_file(tree, tmp_path, bad, pattern):
    entry = _entry("multi_shot/cam_a/person_0001/0001.png")
    bad(entry)
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=pattern):
        PRID2011(tree, keypoints=kp_file)


def test_real_keypoints_cover_every_frame(real_data):
    root = real_data / "cuhk03-pair1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback and no unmatched entry on the real file
        ds = PRID2011(root, split_file=root / "splits.json", keypoints=root / "keypoints.json")
    assert ds.num_keypoint_fallbacks == 0 and ds.num_unmatched_keypoints == 0
    kp = ds.frame_keypoints(ds.train[0].frames[0])
    assert kp.shape == (17, 3) and 0 < kp[:, 2].max() <= 1
    # keypoints lie inside (or within a few pixels of) the crop they belong to
    assert kp[:, 0].min() > -5 and kp[:, 1].min() > -5
