import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stgraph.graph import heatmap_softmax, keypoint_heatmaps, load_coco_keypoints, prior_pose

REAL_KEYPOINTS = (Path(__file__).resolve().parents[2].parent / "shared" / "data"
                  / "cuhk03-pair1" / "keypoints.json")


def _det(image_id, score, value=1.0, k=17):
    kps = []
    for i in range(k):
        kps += [value + i, 2.0 * i, 0.5]
    return {"image_id": image_id, "category_id": 1, "keypoints": kps, "score": score}


def test_reads_a_json_list(tmp_path):
    path = tmp_path / "kp.json"
    path.write_text(json.dumps([_det("a.jpg", 0.9), _det(7, 0.5, value=3.0)]))
    out = load_coco_keypoints(path)
    assert set(out) == {"a.jpg", 7}
    assert out["a.jpg"].shape == (17, 3) and out["a.jpg"].dtype == np.float32
    np.testing.assert_allclose(out["a.jpg"][4], [5.0, 8.0, 0.5])
    np.testing.assert_allclose(out[7][0], [3.0, 0.0, 0.5])


@pytest.mark.parametrize("layout", ["jsonl", "array_per_line"])
def test_reads_one_object_per_line(tmp_path, layout):
    lines = [json.dumps(_det(f"f{i}.jpg", 0.9, value=float(i))) for i in range(3)]
    if layout == "jsonl":
        text = "\n".join(lines) + "\n"
    else:  # how cuhk03-pair1/keypoints.json is written: "[", "{...},", ..., "{...}", "]"
        text = "[\n" + ",\n".join(lines) + "\n]\n"
    path = tmp_path / "kp.json"
    path.write_text(text)
    out = load_coco_keypoints(path)
    assert sorted(out) == ["f0.jpg", "f1.jpg", "f2.jpg"]
    assert out["f2.jpg"][0, 0] == 2.0


@pytest.mark.parametrize("order", [(0.3, 0.8, 0.6), (0.8, 0.3, 0.6), (0.6, 0.3, 0.8)])
def test_duplicate_detections_keep_the_highest_score(tmp_path, order):
    path = tmp_path / "kp.jsonl"
    dets = [_det("x.jpg", s, value=10 * s) for s in order]
    path.write_text("\n".join(json.dumps(d) for d in dets))
    out = load_coco_keypoints(path)
    assert list(out) == ["x.jpg"]
    assert out["x.jpg"][0, 0] == pytest.approx(8.0)  # value of the 0.8 detection


def test_missing_score_ranks_by_mean_keypoint_score(tmp_path):
    a = _det("x.jpg", 0.0)
    del a["score"]  # mean keypoint score 0.5
    b = _det("x.jpg", 0.4, value=9.0)
    path = tmp_path / "kp.json"
    path.write_text(json.dumps([b, a]))
    assert load_coco_keypoints(path)["x.jpg"][0, 0] == 1.0


def test_wrong_length_names_file_entry_and_image(tmp_path):
    bad = _det("b.jpg", 0.9)
    bad["keypoints"] = bad["keypoints"][:-3]
    path = tmp_path / "kp.json"
    path.write_text(json.dumps([_det("a.jpg", 0.9), bad]))
    with pytest.raises(ValueError, match=r"kp\.json: entry 1 \(image_id='b\.jpg'\) has keypoints "
                                         r"of length 48, expected 51"):
        load_coco_keypoints(path)
    # the same short entry is right for a 16-keypoint skeleton
    short = tmp_path / "kp16.json"
    short.write_text(json.dumps([bad]))
    assert load_coco_keypoints(short, num_keypoints=16)["b.jpg"].shape == (16, 3)


def test_wrong_length_in_json_lines_names_the_line(tmp_path):
    bad = _det("b.jpg", 0.9)
    bad["keypoints"].append(1.0)
    path = tmp_path / "kp.jsonl"
    path.write_text(json.dumps(_det("a.jpg", 0.9)) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"entry 1 \(line 3\) \(image_id='b\.jpg'\).*length 52"):
        load_coco_keypoints(path)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_rejected(tmp_path, token):
    text = json.dumps([_det("a.jpg", 0.9), _det("c.jpg", 0.9)])
    text = text.replace('"c.jpg", "category_id": 1, "keypoints": [1.0',
                        f'"c.jpg", "category_id": 1, "keypoints": [{token}')
    path = tmp_path / "kp.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"kp\.json: entry 1 \(image_id='c\.jpg'\) has a "
                                         r"non-finite value .* keypoints\[0\]"):
        load_coco_keypoints(path)


def test_missing_file_and_garbage(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="keypoints file not found: .*nope.json"):
        load_coco_keypoints(missing)
    with pytest.raises(FileNotFoundError):
        load_coco_keypoints(missing)
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty.json is empty"):
        load_coco_keypoints(empty)
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"image_id": 1, "keypoints": []}\nnot json\n')
    with pytest.raises(ValueError, match=r"garbage.json: line 2 is not valid JSON"):
        load_coco_keypoints(garbage)
    no_kp = tmp_path / "nokp.json"
    no_kp.write_text(json.dumps([{"image_id": "a"}]))
    with pytest.raises(ValueError, match=r"entry 0 \(image_id='a'\) has no 'keypoints'"):
        load_coco_keypoints(no_kp)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_KEYPOINTS.is_file(), reason="../shared/data not present")
def test_reads_the_cuhk03_keypoints_file():
    out = load_coco_keypoints(REAL_KEYPOINTS)
    assert len(out) == 8177
    kp = out["multi_shot/cam_a/person_0001/0001.jpg"]
    np.testing.assert_allclose(kp[0], [15.82, 32.32, 0.931], rtol=1e-6)
    assert all(v.shape == (17, 3) for v in out.values())


def test_prior_pose_is_an_upright_frontal_pedestrian():
    p = prior_pose(256, 128)
    assert p.shape == (17, 3) and p.dtype == np.float32
    assert (p[:, 2] == 1).all()
    assert (p[:, 0] > 0).all() and (p[:, 0] < 128).all() and (p[:, 1] < 256).all()
    y = p[:, 1]
    assert y[0] < y[5] < y[11] < y[13] < y[15]  # nose above shoulders above hips ...
    assert p[5, 0] > 64 > p[6, 0]  # facing the camera: left shoulder on the image's right
    np.testing.assert_allclose(p[5:17:2, 0] + p[6:17:2, 0], 128, atol=1e-4)  # symmetric
    np.testing.assert_allclose(prior_pose(512, 256)[:, :2], 2 * p[:, :2], rtol=1e-6)
    with pytest.raises(ValueError, match="positive height and width"):
        prior_pose(0, 128)


def test_heatmap_peaks_at_the_keypoint_cell():
    # 256 x 128 image, 16 x 8 grid: cell (h, w) has its centre at pixel (16w + 8, 16h + 8)
    cells = [(0, 0), (3, 4), (15, 7), (9, 2)]
    kp = torch.tensor([[[16.0 * w + 8, 16.0 * h + 8, 0.9] for h, w in cells]])  # (1, 4, 3)
    m = keypoint_heatmaps(kp, (256, 128), (16, 8))
    assert m.shape == (1, 4, 16, 8)
    for k, (h, w) in enumerate(cells):
        assert divmod(int(m[0, k].argmax()), 8) == (h, w)
    torch.testing.assert_close(m.sum(dim=(-2, -1)), torch.ones(1, 4))


def test_heatmap_values_by_hand():
    # keypoint at the centre of cell (1, 1) of a 3 x 3 grid, score 1, sigma 1:
    # z = exp(-d^2 / 2), d^2 in {0, 1, 2}; m = softmax(z) over the 9 cells
    kp = torch.tensor([[1.5, 1.5, 1.0]])
    m = keypoint_heatmaps(kp, (3.0, 3.0), (3, 3))[0]
    d2 = torch.tensor([[2.0, 1, 2], [1, 0, 1], [2, 1, 2]])
    z = torch.exp(-d2 / 2)
    torch.testing.assert_close(m, torch.exp(z) / torch.exp(z).sum())


def test_zero_score_gives_a_uniform_map_and_temperature_sharpens():
    kp = torch.tensor([[30.0, 40.0, 0.0], [30.0, 40.0, 1.0]])
    m = keypoint_heatmaps(kp, (256, 128), (16, 8))
    torch.testing.assert_close(m[0], torch.full((16, 8), 1 / 128))
    sharp = keypoint_heatmaps(kp, (256, 128), (16, 8), temperature=0.05)
    assert sharp[1].max() > 0.5 > m[1].max()


def test_heatmaps_are_vectorised_and_take_numpy_and_per_image_sizes():
    torch.manual_seed(0)
    kp = torch.rand(2, 3, 17, 3) * torch.tensor([128.0, 256.0, 1.0])
    m = keypoint_heatmaps(kp, (256, 128), (16, 8), sigma=1.5)
    assert m.shape == (2, 3, 17, 16, 8)
    torch.testing.assert_close(m[1, 2], keypoint_heatmaps(kp[1, 2], (256, 128), (16, 8), 1.5))
    m_np = keypoint_heatmaps(kp.numpy(), (256, 128), (16, 8), sigma=1.5)
    torch.testing.assert_close(m_np, m)
    # a (..., 2) size per image: image 1 twice as large with keypoints twice as far
    sizes = torch.tensor([[256.0, 128.0], [512.0, 256.0]]).view(2, 1, 2)
    kp2 = kp.clone()
    kp2[1, :, :, :2] *= 2
    torch.testing.assert_close(keypoint_heatmaps(kp2, sizes, (16, 8), sigma=1.5), m)
    pose = torch.from_numpy(prior_pose(256, 128))
    assert keypoint_heatmaps(pose, (256, 128), (16, 8)).shape == (17, 16, 8)


def test_heatmap_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 3\), got \(17, 2\)"):
        keypoint_heatmaps(torch.zeros(17, 2), (256, 128), (16, 8))
    with pytest.raises(ValueError, match="NaN"):
        keypoint_heatmaps(torch.full((17, 3), float("nan")), (256, 128), (16, 8))
    with pytest.raises(ValueError, match="sigma"):
        keypoint_heatmaps(torch.zeros(17, 3), (256, 128), (16, 8), sigma=0)
    with pytest.raises(ValueError, match="temperature"):
        heatmap_softmax(torch.zeros(2, 2), temperature=0)
