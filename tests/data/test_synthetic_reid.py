import re
import time

import numpy as np
import pytest

from stgraph.data import COCO_KEYPOINT_NAMES, SyntheticReID

SMALL = {"num_train_ids": 6, "num_test_ids": 4, "min_frames": 4, "max_frames": 6}


@pytest.fixture(scope="module")
def small():
    return SyntheticReID(**SMALL, num_cameras=3, tracklets_per_camera=2, seed=0)


def pixels(ds, key):
    return np.asarray(ds.read_frame(key), dtype=np.float64)


def test_default_protocol():
    ds = SyntheticReID()
    assert (ds.num_train_pids, ds.num_train_cams) == (64, 2)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (128, 32, 32)
    assert {t.pid for t in ds.query} == {t.pid for t in ds.gallery} == set(range(64, 96))
    assert all(8 <= len(t.frames) <= 16 for t in ds.train + ds.query + ds.gallery)
    img = ds.read_frame(ds.train[0].frames[0])
    assert img.mode == "RGB" and img.size == (64, 128)


def test_protocol_with_more_cameras_and_tracklets(small):
    assert small.num_train_pids == 6 and small.num_train_cams == 3
    assert len(small.train) == 6 * 3 * 2
    assert len(small.query) == 4 * 2 and {t.camid for t in small.query} == {0}
    assert len(small.gallery) == 4 * 2 * 2 and {t.camid for t in small.gallery} == {1, 2}
    lengths = {len(t.frames) for t in small.train + small.query + small.gallery}
    assert lengths <= {4, 5, 6} and len(lengths) > 1
    for t in small.train:
        assert all(key[:2] == (t.pid, t.camid) for key in t.frames)
        assert [key[3] for key in t.frames] == list(range(len(t.frames)))


def test_same_seed_same_pixels_other_seed_differs(small):
    again = SyntheticReID(**SMALL, num_cameras=3, tracklets_per_camera=2, seed=0)
    other = SyntheticReID(**SMALL, num_cameras=3, tracklets_per_camera=2, seed=1)
    key = small.query[1].frames[2]
    assert np.array_equal(pixels(small, key), pixels(again, key))
    assert np.array_equal(pixels(small, key), pixels(small, key)), "rendering is stateless"
    shared = next(k for k in small.train[0].frames if k in set(other.train[0].frames))
    assert np.abs(pixels(small, shared) - pixels(other, shared)).mean() > 5


def test_frames_of_a_tracklet_move_and_are_noisy(small):
    a, b = small.train[0].frames[:2]
    diff = np.abs(pixels(small, a) - pixels(small, b))
    assert diff.mean() > 1, "walking + noise change the frame"
    assert np.allclose(small.frame_keypoints(a)[:, 2], 1.0)
    assert np.abs(small.frame_keypoints(a) - small.frame_keypoints(b))[:, :2].max() > 0.5


def person_colour(ds, key):
    """Mean colour inside the box spanned by the shoulders, hips and knees."""
    img, kp = pixels(ds, key), ds.frame_keypoints(key)
    x0, x1 = int(kp[[5, 6, 11, 12], 0].min()), int(kp[[5, 6, 11, 12], 0].max()) + 1
    y0, y1 = int(kp[[5, 6], 1].min()), int(kp[[13, 14], 1].max()) + 1
    return img[y0:y1, x0:x1].reshape(-1, 3).mean(0)


def test_identities_differ_more_than_frames_of_one_identity():
    ds = SyntheticReID(num_train_ids=16, num_test_ids=1, min_frames=4, max_frames=4, seed=3)
    cam0 = [t for t in ds.train if t.camid == 0]
    colours = np.stack([[person_colour(ds, k) for k in t.frames] for t in cam0])  # (16, 4, 3)
    within = np.linalg.norm(colours - colours.mean(1, keepdims=True), axis=-1).mean()
    means = colours.mean(1)
    between = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(16, 1)]
    assert between.mean() > 4 * within
    assert np.median(between) > 2 * within


def test_camera_changes_appearance():
    ds = SyntheticReID(num_train_ids=12, num_test_ids=1, seed=0)
    by_cam = {
        c: np.stack([person_colour(ds, t.frames[0]) for t in ds.train if t.camid == c])
        for c in (0, 1)
    }  # (12, 3) per camera, the same identities in the same order
    cross = np.linalg.norm(by_cam[0] - by_cam[1], axis=-1)
    assert cross.mean() > 10, "the same person looks different in another camera"
    corner = {c: pixels(ds, next(t for t in ds.train if t.camid == c).frames[0])[:8, :8]
              for c in (0, 1)}  # fmt: skip
    assert np.abs(corner[0].mean((0, 1)) - corner[1].mean((0, 1))).max() > 10, "backgrounds"


def test_keypoints_are_coco_ordered_and_inside_the_image():
    assert len(COCO_KEYPOINT_NAMES) == 17 and COCO_KEYPOINT_NAMES[15] == "left_ankle"
    for seed in (0, 1):
        ds = SyntheticReID(num_train_ids=10, num_test_ids=4, num_cameras=3, seed=seed)
        for t in ds.train + ds.query + ds.gallery:
            for key in t.frames[::3]:
                kp = ds.frame_keypoints(key)
                assert kp.shape == (17, 3) and kp.dtype == np.float32
                assert (kp[:, 0] >= 0).all() and (kp[:, 0] < 64).all()
                assert (kp[:, 1] >= 0).all() and (kp[:, 1] < 128).all()
                y = kp[:, 1]
                # head above shoulders above elbows/hips above knees above ankles
                assert y[:5].max() < y[5:7].min() < y[11:13].min() < y[13:15].min()
                assert y[13:15].max() < y[15:17].min()


def test_left_is_on_the_image_right_in_front_views():
    ds = SyntheticReID(num_train_ids=24, num_test_ids=1, seed=0)
    fronts = set()
    for t in ds.train:
        key = t.frames[0]
        kp = ds.frame_keypoints(key)
        front = ds._tracklets[key[:3]].front
        fronts.add(front)
        # seen from the front, the person's left shoulder is on the image's right
        assert (kp[5, 0] > kp[6, 0]) == front
        assert (kp[11, 0] > kp[12, 0]) == front
    assert fronts == {True, False}


def test_keypoints_scale_with_image_size():
    a = SyntheticReID(num_train_ids=2, num_test_ids=1, image_size=(128, 64))
    b = SyntheticReID(num_train_ids=2, num_test_ids=1, image_size=(256, 128))
    key = a.train[1].frames[0]
    assert b.read_frame(key).size == (128, 256)
    assert np.abs(b.frame_keypoints(key)[:, :2] - 2 * a.frame_keypoints(key)[:, :2]).max() < 3


def test_renders_fast():
    ds = SyntheticReID(num_train_ids=8, num_test_ids=1)
    keys = [k for t in ds.train for k in t.frames][:60]
    ds.read_frame(keys[0])
    start = time.perf_counter()
    for key in keys:
        ds.read_frame(key)
    per_frame = (time.perf_counter() - start) / len(keys)
    assert per_frame < 5e-3, f"{per_frame * 1e3:.2f} ms per 128 x 64 frame"


@pytest.mark.parametrize("kwargs, match", [
    ({"num_cameras": 1}, "num_cameras must be an int >= 2"),
    ({"num_train_ids": 0}, "num_train_ids must be an int >= 1"),
    ({"num_test_ids": 2.5}, "num_test_ids must be an int >= 1"),
    ({"tracklets_per_camera": 0}, "tracklets_per_camera must be an int >= 1"),
    ({"min_frames": 0}, "min_frames must be an int >= 1"),
    ({"min_frames": 9, "max_frames": 8}, "min_frames=9 > max_frames=8"),
    ({"image_size": (16, 16)}, r"image_size must be \(height, width\)"),
    ({"image_size": (128,)}, r"image_size must be \(height, width\)"),
])  # fmt: skip
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticReID(**kwargs)


@pytest.mark.parametrize("key", [(0, 0, 0, 99), (99, 0, 0, 0), (0, 5, 0, 0), "frame", (0, 0, 0)])
def test_unknown_key_is_named(small, key):
    with pytest.raises(ValueError, match=re.escape(f"frame key {key!r} is not in this dataset")):
        small.read_frame(key)
    with pytest.raises(ValueError, match="not in this dataset"):
        small.frame_keypoints(key)


def test_repr(small):
    assert repr(small) == (
        "SyntheticReID(num_train_ids=6, num_test_ids=4, num_cameras=3, image_size=(128, 64), "
        "seed=0)"
    )
