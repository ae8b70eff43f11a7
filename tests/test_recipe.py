"""stgraph.recipe: training as library code, the same run as ``stgraph train``."""

import json

import pytest
import torch

from stgraph.cache import build_feature_cache, cache_settings
from stgraph.checkpoint import load_checkpoint
from stgraph.cli import main
from stgraph.config import SettingError, TrainSettings
from stgraph.data import SyntheticReID
from stgraph.models import create_model
from stgraph.models.backbones import build_backbone
from stgraph.recipe import CacheSource, FrameSource, prepare, train

SYN = {"num_train_ids": 8, "num_test_ids": 4, "min_frames": 4, "max_frames": 6,
       "image_size": [64, 32], "seed": 2}
TINY = dict(backbone="resnet18", height=64, width=32, seq_len=4, batch_ids=4,
            batch_instances=2, epochs=1, workers=0, no_progress=True)


def _settings(tmp_path, name="run", **kw):
    return TrainSettings(model="tp", dataset="synthetic", dataset_kwargs=SYN,
                         output=str(tmp_path / name), **{**TINY, **kw})


def test_train_from_python_is_the_run_of_the_command_line(tmp_path, capsys):
    lib, cli_out = tmp_path / "lib", tmp_path / "cli"
    settings = TrainSettings(model="tp", dataset="synthetic", output=str(lib), **TINY)
    metrics = train(settings)
    assert json.loads((lib / "metrics.json").read_text())["rank1"] == metrics["rank1"]
    model, cfg = load_checkpoint(lib / "checkpoint.pth")
    assert cfg["args"] == settings.record() and (cfg["seq_len"], cfg["height"]) == (4, 64)
    assert "epoch 1/1  loss" in capsys.readouterr().out
    # the same settings through stgraph train: the same run, weight for weight
    flags = []
    for key, value in TINY.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    assert main(["train", "--model", "tp", "--dataset", "synthetic", "--output", str(cli_out),
                 *flags]) == 0
    cli_model, cli_cfg = load_checkpoint(cli_out / "checkpoint.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, cli_model.state_dict()[key]), key
    cli_metrics = json.loads((cli_out / "metrics.json").read_text())
    assert (cli_metrics["rank1"], cli_metrics["mAP"]) == (metrics["rank1"], metrics["mAP"])
    assert {**cli_cfg["args"], "output": None} == {**cfg["args"], "output": None}


def test_dataset_kwargs_reach_the_dataset_and_the_checkpoint(tmp_path):
    metrics = train(_settings(tmp_path, "small"))
    _, cfg = load_checkpoint(tmp_path / "small" / "checkpoint.pth")
    assert cfg["dataset"] == {"name": "synthetic", **SYN}
    assert metrics["num_query"] == 4 and cfg["num_classes"] == 8


def test_prepare_checks_every_setting_before_anything_is_written(tmp_path):
    cases = [
        (dict(model_arg=["nope=1"]), "takes no argument 'nope'"),
        (dict(cut="head"), "cut is a setting of feature_cache"),
        (dict(bn_momentum=0.0), r"bn_momentum must be > 0 and <= 1 .*got 0.0"),
        (dict(batch_ids=3, batch_instances=3), None),  # fine in one process
    ]
    for kw, message in cases:
        s = _settings(tmp_path, "o", **kw)
        if message is None:
            run = prepare(s, log=lambda line: None)
            assert isinstance(run.source, FrameSource) and run.num_classes == 8
            assert run.resume is None and run.clip_size == (4, 64, 32)
        else:
            with pytest.raises(SettingError, match=message):
                prepare(s, log=lambda line: None)
        assert not (tmp_path / "o").exists()
    with pytest.raises(SettingError, match="dataset is required"):
        prepare(TrainSettings(model="tp", output=str(tmp_path / "o")))


def test_a_folder_that_holds_a_run_is_refused_and_resume_compares_the_settings(tmp_path):
    train(_settings(tmp_path, "done"))
    with pytest.raises(SettingError, match="holds a finished run") as err:
        prepare(_settings(tmp_path, "done"), log=lambda line: None)
    assert "pass --overwrite" in err.value.for_cli()
    with pytest.raises(SettingError, match="settings differ") as err:
        prepare(_settings(tmp_path, "done", resume=True, lr=1e-3), log=lambda line: None)
    assert "--lr 0.001 (last.pth: 0.00035)" in err.value.for_cli()
    run = prepare(_settings(tmp_path, "done", resume=True, epochs=2), log=lambda line: None)
    assert run.resume["trainer"]["epoch"] == 1


def test_one_source_interface_for_frames_and_a_cache(tmp_path):
    data = SyntheticReID(**{**SYN, "image_size": (64, 32)})
    torch.manual_seed(0)
    cache = build_feature_cache(data, build_backbone("resnet18"), tmp_path / "cache",
                                cache_settings({"name": "synthetic"}, "resnet18", None, 1, 64,
                                               32, "layer4"), batch_size=8, progress=False)
    model = create_model("tp", num_classes=8, backbone="resnet18")
    settings = _settings(tmp_path)
    for source in (FrameSource(data, 64, 32), CacheSource(cache)):
        assert source.num_classes == 8
        net = source.net(model)
        batch = next(iter(source.train_loader(settings, keypoints=False)))
        assert batch["pid"].shape == (8,)
        out = net.train()(batch["clip"])
        assert out["embedding"].shape[0] == 8 and len(out["logits"]) >= 1
        metrics = source.evaluate(net.eval(), 4, progress=False)
        assert metrics["num_query"] == 4 and 0 <= metrics["rank1"] <= 1
    # the cache's tail trains, its head and tail only
    trainable = {n for n, p in CacheSource(cache).net(model).named_parameters()
                 if p.requires_grad}
    assert any(".layer4." in n for n in trainable)
    assert not any(".layer3." in n for n in trainable)
