"""Tests of the frozen protocol: the feature-map cache, its clip datasets and head training."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from stgraph.cache import (
    CachedTestClips,
    CachedTrainClips,
    FeatureCache,
    FeatureMapHead,
    build_feature_cache,
    cache_settings,
    evaluate_cached,
)
from stgraph.cli import main
from stgraph.data import SyntheticReID, load_clip_with_keypoints
from stgraph.data import test_clip_indices as clip_indices  # aliased: not a test
from stgraph.engine import evaluate
from stgraph.graph import flip_keypoints
from stgraph.models import create_model
from stgraph.models.backbones import build_backbone

H, W = 64, 32


@pytest.fixture(scope="module")
def data():
    return SyntheticReID(num_train_ids=6, num_test_ids=4, min_frames=2, max_frames=5,
                         image_size=(H, W), seed=3)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("resnet18")


@pytest.fixture(scope="module")
def cache(data, backbone, tmp_path_factory):
    settings = cache_settings({"name": "synthetic"}, "resnet18", None, 1, H, W)
    out = tmp_path_factory.mktemp("cache")
    return build_feature_cache(data, backbone, out, settings, batch_size=5, progress=False)


def test_maps_are_the_backbones_on_each_frame_and_its_mirror(data, cache, backbone):
    backbone.eval()
    t = data.gallery[1]
    rows = cache.gallery[1].rows
    assert len(rows) == len(t.frames)
    clip, kp = load_clip_with_keypoints(data, list(t.frames), H, W)
    with torch.no_grad():
        plain, mirrored = backbone(clip), backbone(clip.flip(-1))
    maps, keypoints = cache.read(rows)
    torch.testing.assert_close(maps, plain.half().float(), atol=0, rtol=0)  # float16 storage
    torch.testing.assert_close(keypoints, kp)
    maps, keypoints = cache.read(rows, flip=True)
    torch.testing.assert_close(maps, mirrored.half().float(), atol=0, rtol=0)
    torch.testing.assert_close(keypoints, flip_keypoints(kp, W))
    assert cache.shape == (2, cache.shape[1], 512, 4, 2) and cache.maps.dtype == np.float16
    assert isinstance(cache.maps, np.memmap)  # inspection view, not loaded whole
    with pytest.raises(IndexError, match="out of range"):
        cache.read([cache.shape[1]])
    assert [t.pid for t in cache.query] == [t.pid for t in data.query]
    assert [t.camid for t in cache.gallery] == [t.camid for t in data.gallery]
    assert cache.num_train_pids == data.num_train_pids


def test_a_cache_is_not_copied_into_workers(cache):
    clips = CachedTrainClips(cache, 4)
    _ = clips[0]  # opens the file
    maps_bytes = (cache.root / "maps.npy").stat().st_size
    assert len(pickle.dumps(clips)) < maps_bytes / 10  # the manifest and keypoints only
    again = pickle.loads(pickle.dumps(clips))
    assert again.cache._fd is None and torch.equal(again[0]["clip"], clips[0]["clip"])


def test_settings_that_differ_are_named(cache, tmp_path):
    ok = cache_settings({"name": "synthetic"}, "resnet18", None, 1, H, W)
    cache.check(ok)
    bad = cache_settings({"name": "prid2011", "root": "data"}, "resnet18", "imagenet", 1, 128, W)
    with pytest.raises(ValueError) as err:
        cache.check(bad)
    msg = str(err.value)
    assert "height: cache 64, run 128" in msg and "pretrained: cache None, run 'imagenet'" in msg
    assert "dataset.name: cache 'synthetic', run 'prid2011'" in msg
    assert str(tmp_path.parent.parent) not in "" and "dataset.root: cache None, run '/" in msg


def test_unfinished_or_existing_caches(data, cache, backbone, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a feature cache"):
        FeatureCache(tmp_path)
    settings = cache_settings({"name": "synthetic"}, "resnet18", None, 1, H, W)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_feature_cache(data, backbone, cache.root, settings, progress=False)
    manifest = json.loads((cache.root / "manifest.json").read_text())
    manifest["version"] = 0
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format version 0"):
        FeatureCache(tmp_path)


def test_train_clips_sample_restricted_random_and_flip(cache):
    clips = CachedTrainClips(cache, 3, seed=1, keypoints=True)
    a, b = clips[2], clips[2]
    assert torch.equal(a["clip"], b["clip"]) and a["pid"] == cache.train[2].pid
    flips = set()
    for epoch in range(12):
        clips.set_epoch(epoch)
        item = clips[2]
        rows = cache.train[2].rows
        # which frames and which plane: the clip is one of the cached rows of its tracklet
        plain = [cache.read([r])[0][0] for r in rows]
        mirrored = [cache.read([r], flip=True)[0][0] for r in rows]
        f0 = item["clip"][0]
        if any(torch.equal(f0, m) for m in mirrored) and not any(torch.equal(f0, p)
                                                                 for p in plain):
            flips.add(True)
        else:
            assert any(torch.equal(f0, p) for p in plain)
            flips.add(False)
    assert flips == {True, False}  # both planes are used over epochs
    assert item["keypoints"].shape == (3, 17, 3)
    off = CachedTrainClips(cache, 3, seed=1, flip=False)
    for epoch in range(6):
        off.set_epoch(epoch)
        f0 = off[2]["clip"][0]
        assert any(torch.equal(f0, cache.read([r])[0][0]) for r in cache.train[2].rows)


@pytest.mark.parametrize("name", ["stgcn", "ctl"])
def test_head_on_cached_maps_equals_the_model_on_frames(data, cache, backbone, name):
    torch.manual_seed(0)
    kwargs = {"seq_len": 2} if name == "stgcn" else {}
    model = create_model(name, num_classes=data.num_train_pids, backbone="resnet18",
                         **kwargs).eval()
    model.backbone.load_state_dict(backbone.state_dict())
    head = FeatureMapHead(model, cache.image_size).eval()
    t = data.query[0]
    keys = list(t.frames[:2])
    clip, kp = load_clip_with_keypoints(data, keys, H, W)
    maps, cached_kp = cache.read(cache.query[0].rows[:2])
    with torch.no_grad():
        kwargs = {"keypoints": kp[None]} if name == "ctl" else {}
        want = model(clip[None], **kwargs)["embedding"]
        got = head(maps[None], **({"keypoints": cached_kp[None]} if name == "ctl" else {}))
    torch.testing.assert_close(got["embedding"], want, atol=5e-2, rtol=1e-2)  # float16 maps
    assert not any(p.requires_grad for p in model.backbone.parameters())
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\)"):
        head(maps)


def test_evaluation_from_the_cache_matches_evaluation_on_frames(data, cache, backbone):
    torch.manual_seed(0)
    model = create_model("tp", num_classes=data.num_train_pids, backbone="resnet18")
    model.backbone.load_state_dict(backbone.state_dict())
    head = FeatureMapHead(model, cache.image_size)
    got = evaluate_cached(head, cache, 3, batch_size=4, progress=False)
    want = evaluate(model, data, 3, H, W, batch_size=4, progress=False)
    assert got["num_query"] == want["num_query"] and got["num_gallery"] == want["num_gallery"]
    # float16 maps move the distances by ~1e-3: a near tie may flip one query's rank
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-2)
    assert got["rank1"] == pytest.approx(want["rank1"], abs=1 / want["num_query"] + 1e-9)


@pytest.mark.parametrize("last_clip", ["overlap", "pad"])
def test_cached_test_clips_cover_every_frame(cache, last_clip):
    clips = CachedTestClips(cache, cache.gallery, 2, last_clip=last_clip)
    lengths = [len(t.rows) for t in cache.gallery]
    assert len(clips) == sum(-(-n // 2) for n in lengths)
    assert clips.clip_tracklet.bincount().tolist() == [-(-n // 2) for n in lengths]
    # each tracklet's clips are the rows of test_clip_indices, as TestClipDataset's frames
    for n, t in enumerate(cache.gallery):
        got = [rows for k, rows in clips.clips if k == n]
        want = [[t.rows[j] for j in idx] for idx in
                clip_indices(len(t.rows), 2, last_clip).tolist()]
        assert got == want
    with pytest.raises(ValueError, match="CachedTestClips: last_clip must be one of"):
        CachedTestClips(cache, cache.gallery, 2, last_clip="wrap")


@pytest.mark.slow
@pytest.mark.learns
def test_cli_cache_then_train_the_head_above_chance(tmp_path, capsys, train_seed):
    out = tmp_path / "cache"
    assert main(["cache", "--dataset", "synthetic", "--backbone", "efficientnet_lite0",
                 "--height", str(H), "--width", str(W), "--out", str(out), "--workers", "0",
                 "--no-progress", "--cut", "end"]) == 0
    assert "frames x 2 flips at cut 'end' (1280 channels, 4 x 2)" in capsys.readouterr().out
    args = ["train", "--model", "stgcn", "--dataset", "synthetic", "--backbone",
            "efficientnet_lite0", "--pretrained", "imagenet", "--height", str(H), "--width",
            str(W), "--seq-len", "4", "--epochs", "4", "--batch-ids", "8",
            "--batch-instances", "2", "--workers", "0", "--no-progress", "--seed",
            str(train_seed), "--feature-cache", str(out), "--output", str(tmp_path / "run")]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # and training did it: the same model untrained ranks worse
    from stgraph.cli import load_checkpoint

    trained, cfg = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    torch.manual_seed(0)
    untrained = create_model("stgcn", num_classes=cfg["num_classes"],
                             **cfg["model_kwargs"])
    untrained.backbone.load_state_dict(trained.backbone.state_dict())
    fc = FeatureCache(out)
    before = evaluate_cached(FeatureMapHead(untrained, fc.image_size), fc, 4, progress=False)
    with capsys.disabled():
        print(f"\n[learns] cached stgcn seed {train_seed}: rank1 {metrics['rank1']:.4f} "
              f"mAP {metrics['mAP']:.4f}, untrained mAP {before['mAP']:.4f}")
    # chance is 1 / 32; 5 seeds (conftest.train_seed), cosine ranking: rank1 0.19-0.22, mAP
    # 0.34-0.37 against 0.250 untrained (euclidean: 0.125-0.19, 0.30-0.34 against 0.260)
    assert metrics["rank1"] >= 3 / 32
    assert metrics["mAP"] > before["mAP"] + 0.015  # the worst of 5 seeds: +0.094 (eucl. +0.036)
    # only the head trained: the backbone's parameters are the packaged ImageNet weights
    assert metrics["trainable_parameters"] < metrics["parameters"] - 3_000_000
    # a run asking for another size is refused, naming it
    bad = [a if a != str(H) else "128" for a in args]
    assert main(bad) == 2
    assert "height: cache 64, run 128" in capsys.readouterr().err


def test_a_cache_without_the_backbones_input_normalisation_is_refused(cache):
    # caches made before EfficientNet-Lite mapped its input to (p - 127) / 128 lack the key
    ok = cache_settings({"name": "synthetic"}, "resnet18", None, 1, H, W)
    assert ok["input_norm"] == "imagenet"
    lite = cache_settings({"name": "synthetic"}, "efficientnet_lite0", None, 1, H, W)
    assert lite["input_norm"] == "lite (p - 127) / 128"
    old = dict(cache.settings)
    old.pop("input_norm")
    object.__setattr__(cache, "settings", old) if hasattr(type(cache), "__dataclass_fields__") \
        else setattr(cache, "settings", old)
    try:
        with pytest.raises(ValueError, match=r"input_norm: cache None, run 'imagenet'"):
            cache.check(ok)
    finally:
        cache.settings["input_norm"] = "imagenet"


@pytest.fixture(scope="module")
def cut_cache(data, backbone, tmp_path_factory):
    settings = cache_settings({"name": "synthetic"}, "resnet18", None, 1, H, W, cut="layer4")
    out = tmp_path_factory.mktemp("cut_cache")
    return build_feature_cache(data, backbone, out, settings, batch_size=5, progress=False)


def test_a_cache_cut_inside_the_backbone_trains_its_tail(data, cut_cache, backbone):
    assert cut_cache.cut == "layer4" and cut_cache.shape[2] == 256  # layer4's input
    torch.manual_seed(0)
    model = create_model("tp", num_classes=data.num_train_pids, backbone="resnet18")
    model.backbone.load_state_dict(backbone.state_dict())
    head = FeatureMapHead(model, cut_cache.image_size, cut_cache.cut).eval()
    # the tail on the cached maps gives the model's embedding on the frames (float16 maps)
    maps, _ = cut_cache.read(cut_cache.query[0].rows[:3])
    clip, _ = load_clip_with_keypoints(data, data.query[0].frames[:3], H, W)
    with torch.no_grad():
        want = model(clip[None])["embedding"]
        got = head(maps.float()[None])["embedding"]
    torch.testing.assert_close(got, want, atol=5e-2, rtol=1e-2)
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.backbone.layer4.") for n in trainable)
    assert not any(n.startswith(("model.backbone.layer3.", "model.backbone.conv1"))
                   for n in trainable)
    # the optimiser puts the tail in the backbone group (--backbone-lr-mult)
    from stgraph.engine import build_optimizer

    opt = build_optimizer(head, 1e-3, backbone_lr_mult=0.1)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(
        p.numel() for p in model.backbone.layer4.parameters())


def test_a_run_at_another_cut_is_refused_naming_it(cut_cache, cache):
    settings = cache_settings({"name": "synthetic"}, "resnet18", None, 1, H, W)
    with pytest.raises(ValueError, match=r"cut: cache 'layer4', run 'end'"):
        cut_cache.check(settings)
    cache.check(settings)  # a cache made without a cut is the frozen protocol's ("end")
    assert cache.cut == "end"


@pytest.mark.slow
def test_cli_partial_protocol_trains_the_backbone_tail_from_the_cache(tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["cache", "--dataset", "synthetic", "--backbone", "efficientnet_lite0",
                 "--height", str(H), "--width", str(W), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0  # the default cut: the head conv's input
    assert "at cut 'head' (320 channels, 4 x 2)" in capsys.readouterr().out
    assert FeatureCache(out).cut == "head"
    args = ["train", "--model", "tp", "--dataset", "synthetic", "--backbone",
            "efficientnet_lite0", "--pretrained", "imagenet", "--height", str(H), "--width",
            str(W), "--seq-len", "4", "--epochs", "2", "--batch-ids", "8",
            "--batch-instances", "2", "--workers", "0", "--no-progress",
            "--feature-cache", str(out), "--output", str(tmp_path / "run")]
    assert main(args) == 0
    assert "training the backbone after cut 'head' and the head" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # TP's head is its BNNeck (BN weight, its bias frozen as in Bag of Tricks, and the
    # classifier); what trains besides is the head conv (320 x 1280) and its BN
    neck = 1280 + 1280 * 64
    assert metrics["trainable_parameters"] == 320 * 1280 + 2 * 1280 + neck
    # the checkpoint is the whole model: on frames it ranks as it did from the cache
    from stgraph.cli import load_checkpoint

    trained, cfg = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    packaged = build_backbone("efficientnet_lite0", pretrained="imagenet")
    assert not torch.equal(trained.backbone._conv_head.weight, packaged._conv_head.weight)
    assert torch.equal(trained.backbone._blocks[0]._depthwise_conv.weight,
                       packaged._blocks[0]._depthwise_conv.weight)  # before the cut
    from stgraph.data import create_dataset

    data = create_dataset("synthetic")  # what --dataset synthetic builds
    on_frames = evaluate(trained, data, 4, H, W, progress=False)
    assert on_frames["mAP"] == pytest.approx(metrics["mAP"], abs=0.02)  # float16 maps
    # the frozen protocol's flag on this cache is refused, naming the cut
    assert main([*args, "--cut", "end", "--overwrite"]) == 2
    assert "--cut end: feature cache" in capsys.readouterr().err
