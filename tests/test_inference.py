"""stgraph.inference.FeatureExtractor: the features of stgraph.engine.evaluate, from frames."""

import numpy as np
import pytest
import torch
from small_models import H, T, W, small_kwargs, small_model

from stgraph.cli import save_checkpoint
from stgraph.data import SyntheticReID
from stgraph.eval.evaluate import _features
from stgraph.graph import prior_pose
from stgraph.inference import FeatureExtractor, list_tracklet_folders
from stgraph.models.base import takes_keypoints


@pytest.fixture(scope="module")
def data():
    # lengths 3..9 with T = 4: a padded last clip, one clip, several clips
    return SyntheticReID(num_train_ids=2, num_test_ids=3, min_frames=3, max_frames=9,
                         image_size=(64, 32), seed=1)


def _model(name):
    return small_model(name, num_classes=2).eval()


def _expected(model, data, tracklets, batch_size=5, pool="mean", last_clip="overlap"):
    """What stgraph.engine.evaluate ranks: its _features of the same tracklets."""
    return _features(model, data, tracklets, T, H, W, batch_size, "cpu", pool, 0, False, "",
                     last_clip=last_clip)


@pytest.mark.parametrize("name, last_clip", [("tp", "overlap"), ("ctl", "overlap"),
                                             ("stgcn", "overlap"), ("stgcn", "pad")])
def test_same_numbers_as_evaluate_from_pil_frames(name, last_clip, data):
    model = _model(name)
    tracklets = data.query + data.gallery
    assert {len(t.frames) % T for t in tracklets} > {0}  # some last clips overlap or are padded
    expected = _expected(model, data, tracklets, last_clip=last_clip)
    fx = FeatureExtractor(model, seq_len=T, height=H, width=W, batch_size=5, last_clip=last_clip)
    frames = [[data.read_frame(k) for k in t.frames] for t in tracklets]
    keypoints = [np.stack([data.frame_keypoints(k) for k in t.frames]) for t in tracklets]
    got = fx.embed_batch(frames, keypoints=keypoints)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert fx.num_clips == sum(-(-len(t.frames) // T) for t in tracklets)
    # the dataset path reads the same frames through the dataset
    torch.testing.assert_close(fx.embed_dataset(data, tracklets), expected, atol=1e-6, rtol=1e-6)
    # one tracklet alone: the same row (other batches, same numbers up to rounding)
    torch.testing.assert_close(fx.embed(frames[2], keypoints[2]), expected[2],
                               atol=1e-5, rtol=1e-5)


def test_ctl_keypoints_matter_and_default_to_the_prior_pose(data):
    model = _model("ctl")
    assert takes_keypoints(model)
    fx = FeatureExtractor(model, seq_len=T, height=H, width=W)
    t = data.query[0]
    frames = [data.read_frame(k) for k in t.frames]
    gt = np.stack([data.frame_keypoints(k) for k in t.frames])
    with_gt = fx.embed(frames, gt)
    prior = np.broadcast_to(prior_pose(64, 32), gt.shape).copy()
    torch.testing.assert_close(fx.embed(frames), fx.embed(frames, prior), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_gt, fx.embed(frames), atol=1e-4)
    with pytest.raises(ValueError, match=r"keypoints of tracklet 0: expected shape \(\d+, 17, 3\)"):
        fx.embed(frames, gt[:, :5])


def test_paths_keypoint_file_tensors_and_max_pool(tmp_path, data):
    model = _model("ctl")
    t = data.query[1]
    folder = tmp_path / "frames" / "track_a"
    folder.mkdir(parents=True)
    paths = []
    for i, k in enumerate(t.frames):
        p = folder / f"{i:04d}.png"
        data.read_frame(k).save(p)
        paths.append(p)
    # a COCO results file with the ground truth, image_id relative to the root
    import json

    entries = [{"image_id": f"track_a/{p.name}", "keypoints": data.frame_keypoints(k)
                .ravel().tolist(), "score": 1.0} for p, k in zip(paths, t.frames, strict=True)]
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps(entries))
    gt = np.stack([data.frame_keypoints(k) for k in t.frames])
    fx = FeatureExtractor(model, seq_len=T, height=H, width=W, keypoints_file=kp_file,
                          keypoints_root=tmp_path / "frames")
    from_file = fx.embed(paths)
    torch.testing.assert_close(from_file, fx.embed(paths, gt), atol=1e-6, rtol=1e-6)
    assert list_tracklet_folders(tmp_path / "frames") == [("track_a", paths)]

    # uint8 tensors go through PIL as files do; normalised float tensors are clips
    tp = _model("tp")
    fx = FeatureExtractor(tp, seq_len=T, height=H, width=W, pool="max")
    pixels = torch.stack([torch.from_numpy(np.array(data.read_frame(k))).permute(2, 0, 1)
                          for k in t.frames])
    torch.testing.assert_close(fx.embed(pixels), fx.embed(paths), atol=1e-6, rtol=1e-6)
    from stgraph.data import load_clip

    clip = load_clip(data, t.frames, H, W)
    torch.testing.assert_close(fx.embed(clip), fx.embed(paths), atol=1e-6, rtol=1e-6)
    expected = _expected(tp, data, [t], pool="max")
    torch.testing.assert_close(fx.embed(paths)[None], expected, atol=1e-6, rtol=1e-6)


def test_errors_name_the_bad_input(data):
    fx = FeatureExtractor(_model("tp"), seq_len=T, height=H, width=W)
    with pytest.raises(ValueError, match="no tracklet given"):
        fx.embed_batch([])
    with pytest.raises(ValueError, match="tracklet 1 has no frames"):
        fx.embed_batch([[data.read_frame(data.query[0].frames[0])], []])
    with pytest.raises(ValueError, match=r"tracklet 0: a float tensor is a normalised clip at "
                                         r"the model's size \(T, 3, 64, 32\)"):
        fx.embed(torch.zeros(3, 3, 32, 16))
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(T, 3, H, W\)"):
        fx.embed(torch.zeros(3, 64, 32))
    with pytest.raises(TypeError, match="got a single str"):
        fx.embed("frame.png")
    with pytest.raises(FileNotFoundError, match="frame file not found: .*nope.png"):
        fx.embed(["nope.png"])
    with pytest.raises(ValueError, match="unknown pool 'median'"):
        FeatureExtractor(_model("tp"), seq_len=T, height=H, width=W, pool="median")
    with pytest.raises(ValueError, match="seq_len must be an int >= 1"):
        FeatureExtractor(_model("tp"), seq_len=0, height=H, width=W)


def test_from_checkpoint(tmp_path, data):
    model = _model("tp")
    metrics = dict.fromkeys(("rank1", "rank5", "rank10", "rank20", "mAP"), 0.0)
    metrics.update(num_query=1, num_gallery=1)
    path = save_checkpoint(tmp_path / "c.pth", model, {
        "model": "tp", "model_kwargs": small_kwargs("tp"), "num_classes": 2,
        "dataset": {"name": "synthetic"}, "seq_len": T, "height": H, "width": W}, metrics)
    fx = FeatureExtractor.from_checkpoint(path, pool="max", batch_size=3)
    assert (fx.height, fx.width, fx.seq_len, fx.pool, fx.batch_size) == (H, W, T, "max", 3)
    assert fx.config["model"] == "tp"
    t = data.query[0]
    torch.testing.assert_close(fx.embed_dataset(data, [t]),
                               _expected(model, data, [t], batch_size=3, pool="max"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        FeatureExtractor.from_checkpoint(tmp_path / "none.pth")


def test_a_16_bit_frame_is_scaled_as_the_datasets_read_it_not_clipped(tmp_path):
    """A 16-bit grayscale PNG (PIL mode I;16): ``stgraph extract --frames-dir`` used to clip
    it to white with convert("RGB"); it is now read by data.base.to_rgb, as evaluate reads
    a dataset's frames."""
    from PIL import Image

    from stgraph.data.base import to_rgb
    from stgraph.inference import _read_image

    values = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 31).astype(np.uint16)
    path = tmp_path / "f.png"
    Image.fromarray(values).save(path)  # mode I;16
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # PIL reads it back as 16-bit
        want = np.asarray(to_rgb(img))
    got = np.asarray(_read_image(path))
    assert got.shape == (64, 32, 3) and np.array_equal(got, want)
    assert got[..., 0].min() == 0 and 240 <= got[..., 0].max() <= 255
    assert (got == 255).mean() < 0.01  # convert("RGB") gave ~100 % white
    model = _model("tp")
    fx = FeatureExtractor(model, seq_len=T, height=H, width=W)
    torch.testing.assert_close(fx([[path] * T]), fx([[Image.fromarray(want)] * T]))


def test_the_extractor_is_callable_and_takes_the_clip_size_by_name(data):
    model = _model("tp")
    fx = FeatureExtractor(model, seq_len=T, height=H, width=W)
    frames = [[data.read_frame(k) for k in t.frames] for t in data.query[:2]]
    torch.testing.assert_close(fx(frames), fx.embed_batch(frames))
    with pytest.raises(TypeError):  # the old positional (height, width, seq_len) order
        FeatureExtractor(model, H, W, T)
    pre = FeatureExtractor(model, seq_len=T, height=H, width=W, feature="pre-bnneck")
    with torch.no_grad():
        assert pre(frames).shape[1] == sum(f.shape[1] for f in model(
            torch.zeros(1, T, 3, H, W))["features"])


def test_the_last_clip_policy_changes_the_feature_of_a_tracklet_it_concerns(data):
    """With T = 4, a 5-frame tracklet's last clip is frames 1-4 (overlap) or 4, 4, 4, 4 (pad):
    for a per-frame model (TP) the features differ; a 4- or 8-frame tracklet is cut the same."""
    model = _model("tp")
    tracklets = data.query + data.gallery
    kw = dict(seq_len=T, height=H, width=W)
    overlap = FeatureExtractor(model, **kw).embed_dataset(data, tracklets)
    pad = FeatureExtractor(model, **kw, last_clip="pad").embed_dataset(data, tracklets)
    for n, t in enumerate(tracklets):
        same = len(t.frames) % T == 0 or len(t.frames) < T
        assert torch.allclose(overlap[n], pad[n], atol=1e-6) == same, (n, len(t.frames))
    with pytest.raises(ValueError, match="FeatureExtractor: last_clip must be one of"):
        FeatureExtractor(model, **kw, last_clip="wrap")
