"""Keypoints that travel with clips: scaled to the resized frame, mirrored with the flip,
the prior pose where a dataset has none."""

import json

import numpy as np
import pytest
import torch

from stgraph.data import (
    PRID2011,
    SyntheticReID,
    TestClipDataset,
    TrainClipDataset,
    load_clip,
    load_clip_with_keypoints,
)
from stgraph.graph import COCO17, flip_keypoints, prior_pose


class _Poses(SyntheticReID):
    """Synthetic data whose keypoints of every frame are a known array (for exact checks)."""

    def frame_keypoints(self, key):
        kp = np.zeros((17, 3), dtype=np.float32)
        kp[:, 0] = np.arange(17) + 0.5  # x = k + 1/2 in the 64-wide frame
        kp[:, 1] = 2.0 * np.arange(17)
        kp[:, 2] = 0.5
        return kp


def test_keypoints_are_scaled_to_the_resized_frame():
    data = _Poses(num_train_ids=2, num_test_ids=2, image_size=(128, 64), seed=0)
    keys = data.train[0].frames[:3]
    clip, kp = load_clip_with_keypoints(data, keys, 64, 16)  # y / 2, x / 4
    assert clip.shape == (3, 3, 64, 16) and kp.shape == (3, 17, 3)
    torch.testing.assert_close(clip, load_clip(data, keys, 64, 16))
    k = torch.arange(17, dtype=torch.float32)
    torch.testing.assert_close(kp[1, :, 0], (k + 0.5) / 4)
    torch.testing.assert_close(kp[1, :, 1], k)
    torch.testing.assert_close(kp[1, :, 2], torch.full((17,), 0.5))


def test_flipped_clip_carries_mirrored_keypoints_with_left_and_right_swapped():
    data = _Poses(num_train_ids=2, num_test_ids=2, image_size=(128, 64), seed=0)
    keys = data.train[0].frames[:2]
    clip, kp = load_clip_with_keypoints(data, keys, 128, 64)
    clip_f, kp_f = load_clip_with_keypoints(data, keys, 128, 64, flip=True)
    torch.testing.assert_close(clip_f, clip.flip(-1))
    # the left shoulder (5) of the mirrored frame is the right shoulder (6) of the frame
    assert kp_f[0, 5, 0] == pytest.approx(64 - kp[0, 6, 0].item())
    assert kp_f[0, 5, 1] == kp[0, 6, 1] and kp_f[0, 0, 0] == pytest.approx(64 - 0.5)
    torch.testing.assert_close(flip_keypoints(kp_f, 64), kp)  # an involution


def test_flip_index_pairs_left_and_right_names():
    idx = COCO17.flip_index()
    assert sorted(idx) == list(range(17))
    for k, name in enumerate(COCO17.keypoints):
        mirror = COCO17.keypoints[idx[k]]
        assert mirror == name.replace("left", "@").replace("right", "left").replace("@", "right")
    with pytest.raises(ValueError, match="flip_index has 3 entries for 17 keypoints"):
        flip_keypoints(torch.zeros(17, 3), 10, flip_index=(0, 1, 2))


def test_synthetic_ground_truth_keypoints_land_on_the_body():
    data = SyntheticReID(num_train_ids=2, num_test_ids=2, image_size=(128, 64), seed=0)
    _, kp = load_clip_with_keypoints(data, data.train[0].frames[:2], 64, 32)
    nose, ankles = kp[0, 0], kp[0, 15:17]
    assert 0 <= nose[0] <= 32 and nose[1] < ankles[:, 1].min()  # head above feet
    assert (kp[..., 2] == 1).all()


def test_frames_without_keypoints_get_the_prior_pose(tmp_path, prid_tree):
    make_prid_tree, _ = prid_tree
    root = make_prid_tree(tmp_path, {1: 3, 2: 3}, {1: 3, 2: 3})
    data = PRID2011(root)  # no keypoints file: frame_keypoints is None
    _, kp = load_clip_with_keypoints(data, data.train[0].frames[:2], 32, 16)
    torch.testing.assert_close(kp[0], torch.from_numpy(prior_pose(32, 16)))


def test_prid2011_keypoints_file_reaches_the_clip(tmp_path, prid_tree):
    make_prid_tree, _ = prid_tree
    root = make_prid_tree(tmp_path, {1: 2, 2: 2}, {1: 2, 2: 2})  # frames are 4 x 8 (W x H)
    frame = "multi_shot/cam_a/person_0001/0001.png"
    pose = [v for k in range(17) for v in (2.0, 4.0, 0.9)]  # every keypoint at (2, 4)
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps([{"image_id": frame, "keypoints": pose, "score": 1.0}]))
    with pytest.warns(UserWarning):
        data = PRID2011(root, keypoints=kp_file)
    key = next(k for t in (*data.train, *data.query, *data.gallery) for k in t.frames
               if str(k).endswith(frame))
    _, kp = load_clip_with_keypoints(data, [key], 16, 8)  # x2 in both directions
    torch.testing.assert_close(kp[0, :, :2], torch.tensor([4.0, 8.0]).expand(17, 2))
    torch.testing.assert_close(kp[0, :, 2], torch.full((17,), 0.9))


def test_clip_datasets_return_keypoints_only_when_asked():
    data = SyntheticReID(num_train_ids=2, num_test_ids=2, image_size=(64, 32), seed=0)
    plain = TrainClipDataset(data, 4, 64, 32, seed=3)
    with_kp = TrainClipDataset(data, 4, 64, 32, seed=3, keypoints=True)
    assert "keypoints" not in plain[0]
    item = with_kp[0]
    assert item["keypoints"].shape == (4, 17, 3)
    torch.testing.assert_close(item["clip"], plain[0]["clip"])  # same frames, same flip
    test = TestClipDataset(data, data.query, 4, 64, 32, keypoints=True)
    assert test[0]["keypoints"].shape == (4, 17, 3)
    batch = torch.utils.data.default_collate([with_kp[0], with_kp[1]])
    assert batch["keypoints"].shape == (2, 4, 17, 3)


def test_wrong_keypoint_shape_from_a_dataset_names_the_frame():
    class Bad(SyntheticReID):
        def frame_keypoints(self, key):
            return np.zeros((16, 3), dtype=np.float32)

    data = Bad(num_train_ids=2, num_test_ids=2, image_size=(64, 32), seed=0)
    key = data.train[0].frames[0]
    with pytest.raises(ValueError, match=r"keypoints of frame .* have shape \(16, 3\)"):
        load_clip_with_keypoints(data, [key], 64, 32)
