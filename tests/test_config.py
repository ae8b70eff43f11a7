"""stgraph.config: the settings of a run without argparse, equal to the command line's."""

import argparse
import dataclasses
import os

import pytest
import torch

from stgraph.cli import build_parser
from stgraph.config import (
    DEFAULT_NUM_PATCHES,
    ClipSize,
    SettingError,
    TrainSettings,
    checkpoint_config,
    clip_size,
    dataset_config,
    model_kwargs,
    parse_model_args,
    resolve_device,
)

REQUIRED = ["train", "--model", "tp", "--dataset", "synthetic", "--output", "o"]


def test_every_train_flag_is_a_setting_with_the_same_default():
    args = vars(build_parser().parse_args(REQUIRED))
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    flags = set(args) - {"command"}
    assert flags == set(fields) - {"dataset_kwargs"}  # dataset_kwargs: Python only
    settings = TrainSettings(model="tp", output="o", dataset="synthetic")
    for name in flags:
        assert getattr(settings, name) == args[name], name
    assert TrainSettings.from_mapping(args) == settings


def test_the_record_is_what_the_command_line_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = TrainSettings(model="stgcn", output="runs/x", dataset="prid2011",
                             root="data", feature_cache="cache")
    rec = settings.record()
    assert rec["command"] == "train" and rec["num_patches"] == DEFAULT_NUM_PATCHES
    for key in ("output", "root", "feature_cache"):
        assert os.path.isabs(rec[key]), key
    assert rec["pretrained"] is None and settings.num_patches is None  # not changed


def test_dataset_config_errors_name_the_setting():
    with pytest.raises(SettingError, match="root is required for dataset prid2011") as e:
        dataset_config("prid2011")
    assert e.value.for_cli() == "--root is required for --dataset prid2011"
    with pytest.raises(SettingError) as e:
        dataset_config("synthetic", root="r", split_id=0)
    assert e.value.for_cli().startswith("--root, --split-id is not for --dataset synthetic")
    with pytest.raises(SettingError, match="keypoints is not for dataset synthetic"):
        dataset_config("synthetic", keypoints="k.json")
    base = {"name": "prid2011", "root": "/a", "split_id": 1}
    assert dataset_config(base=base, root="/b") == {**base, "root": "/b"}


def test_model_kwargs_from_the_settings_and_model_arg_pairs():
    s = TrainSettings(model="stgcn", output="o", seq_len=4, model_arg=["spatial-channels=64"])
    kw = model_kwargs("stgcn", s)
    assert kw["num_patches"] == DEFAULT_NUM_PATCHES and kw["spatial_channels"] == 64
    assert "tau" not in model_kwargs("ctl", TrainSettings(model="ctl", output="o"))
    assert model_kwargs("stgcn", dataclasses.replace(
        s, model_arg=["num_patches=2"]))["num_patches"] == 2
    with pytest.raises(SettingError, match="num_patches and model_arg num_patches both"):
        model_kwargs("stgcn", dataclasses.replace(s, num_patches=3,
                                                  model_arg=["num_patches=2"]))
    with pytest.raises(SettingError, match="set it with seq_len"):
        model_kwargs("stgcn", dataclasses.replace(s, model_arg=["seq_len=2"]))
    with pytest.raises(SettingError, match="takes no argument 'nope'"):
        model_kwargs("tp", TrainSettings(model="tp", output="o", model_arg=["nope=1"]))
    assert parse_model_args(["rows=(1, 2)", "x=a b"]) == {"rows": [1, 2], "x": "a b"}


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SettingError, match="device nonsense: not a device"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(SettingError) as e:
            resolve_device("cuda")
        assert e.value.for_cli().startswith("--device cuda: CUDA is not available")


def test_checkpoint_config_and_the_clip_size_read_back():
    settings = TrainSettings(model="tp", output="o")
    cfg = checkpoint_config("tp", {"backbone": "resnet18"}, 5, {"name": "synthetic"},
                            ClipSize(4, 64, 32), settings)
    assert (cfg["seq_len"], cfg["height"], cfg["width"]) == (4, 64, 32)
    assert cfg["args"] == settings.record() and cfg["num_classes"] == 5
    assert clip_size(cfg) == (4, 64, 32) and clip_size(cfg).height == 64
    with pytest.raises(ValueError, match="c.pth: its config has no height, width"):
        clip_size({"seq_len": 4}, "c.pth")
    with pytest.raises(ValueError, match="its config's width is 0"):
        clip_size({"seq_len": 4, "height": 8, "width": 0})


def test_no_argparse_in_the_settings_module():
    import stgraph.config as config

    assert "argparse" not in vars(config)
    assert not any(isinstance(v, argparse.ArgumentParser) for v in vars(config).values())


def test_the_evaluation_settings_of_a_run_and_of_evaluate_are_read_alike():
    from stgraph.config import evaluation_kwargs

    settings = TrainSettings(model="tp", output="o", metric="euclidean", test_batch=7)
    args = build_parser().parse_args(["evaluate", "--checkpoint", "c", "--metric",
                                      "euclidean", "--test-batch", "7"])
    assert evaluation_kwargs(settings, "cpu", False) == evaluation_kwargs(args, "cpu", False)
    assert evaluation_kwargs(settings, "cpu", True)["batch_size"] == 7
