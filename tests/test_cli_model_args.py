"""stgraph train --model-arg KEY=VALUE: any constructor argument, checked, and kept in the
checkpoint."""

import pytest
import torch

from stgraph.cli import _parse_model_args, load_checkpoint, main

TINY = ["--backbone", "resnet18", "--height", "64", "--width", "32", "--seq-len", "4",
        "--batch-ids", "4", "--batch-instances", "2", "--workers", "0", "--no-progress"]


class _Stop(Exception):
    pass


@pytest.fixture
def created(monkeypatch):
    """The keyword arguments ``stgraph train`` builds its model with (training stops there)."""
    import stgraph.recipe as cli

    seen = {}

    def create(name, num_classes, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(cli, "create_model", create)
    return seen


def _train(tmp_path, model, *extra):
    return main(["train", "--model", model, "--dataset", "synthetic", "--epochs", "1",
                 "--output", str(tmp_path / "o"), *TINY, *extra])


def test_values_are_python_literals_else_strings():
    assert _parse_model_args([
        "dropout=0.1", "hidden=512", "zero-init=True", "name=abc", "rows=(1, 2)",
        "s='3'", "none=None", "path=a/b.pth", "neg=-2", "e=1e-3", "words=a b"]) == {
        "dropout": 0.1, "hidden": 512, "zero_init": True, "name": "abc", "rows": [1, 2],
        "s": "3", "none": None, "path": "a/b.pth", "neg": -2, "e": 1e-3, "words": "a b"}
    assert _parse_model_args(["x=a=b"]) == {"x": "a=b"}  # the first '=' splits
    with pytest.raises(ValueError, match="--model-arg expects KEY=VALUE, got 'dropout'"):
        _parse_model_args(["dropout"])
    with pytest.raises(ValueError, match="--model-arg expects KEY=VALUE"):
        _parse_model_args(["=3"])
    with pytest.raises(ValueError, match="--model-arg hidden is given twice"):
        _parse_model_args(["hidden=1", "hidden=2"])
    with pytest.raises(ValueError, match="a value must be a number, a string"):
        _parse_model_args(["d={'a': 1}"])


def test_model_args_reach_the_constructor(tmp_path, created):
    with pytest.raises(_Stop):
        _train(tmp_path, "tp_mlp", "--model-arg", "dropout=0.25", "--model-arg", "hidden=16",
               "--model-arg", "zero_init=True")
    assert created == {"backbone": "resnet18", "last_stride": 1, "dropout": 0.25,
                       "hidden": 16, "zero_init": True}
    created.clear()
    with pytest.raises(_Stop):  # a model argument whose flag has a default: no conflict
        _train(tmp_path, "stgcn", "--model-arg", "num_patches=2", "--model-arg",
               "embed_channels=32")
    assert created["num_patches"] == 2 and created["embed_channels"] == 32
    created.clear()
    with pytest.raises(_Stop):  # a flag-less CTL choice
        _train(tmp_path, "ctl", "--model-arg", "cross_scales=['s1']", "--tau", "1")
    assert created["cross_scales"] == ["s1"] and created["tau"] == 1


def test_unknown_key_lists_the_constructor_arguments_and_writes_nothing(tmp_path, capsys,
                                                                        created):
    assert _train(tmp_path, "tp_mlp", "--model-arg", "K=4") == 2
    err = capsys.readouterr().err
    assert "--model-arg K: model tp_mlp takes no argument 'K'; its constructor arguments: " \
           "backbone, last_stride, pretrained, hidden, num_layers, dropout, zero_init" in err
    assert created == {} and not (tmp_path / "o").exists()
    assert _train(tmp_path, "tp", "--model-arg", "num_classes=3") == 2
    assert "number of training identities" in capsys.readouterr().err


def test_a_flag_and_a_model_arg_for_one_key_conflict(tmp_path, capsys, created):
    assert _train(tmp_path, "ctl", "--tau", "3", "--model-arg", "tau=5") == 2
    assert "--tau and --model-arg tau both set tau; give one" in capsys.readouterr().err
    assert _train(tmp_path, "stgcn", "--num-patches", "4", "--model-arg", "num_patches=2") == 2
    assert "--num-patches and --model-arg num_patches" in capsys.readouterr().err
    assert _train(tmp_path, "ctl", "--no-normalize-parts", "--model-arg",
                  "normalize_parts=True") == 2
    assert "--normalize-parts and --model-arg normalize_parts" in capsys.readouterr().err
    # settings the run uses as well take their own flag only
    for key, flag in (("backbone", "--backbone"), ("seq_len", "--seq-len"),
                      ("last_stride", "--last-stride"), ("pretrained", "--pretrained")):
        assert _train(tmp_path, "stgcn", "--model-arg", f"{key}=1") == 2
        assert f"--model-arg {key}: set it with {flag}" in capsys.readouterr().err
    assert created == {}
    with pytest.raises(_Stop):
        _train(tmp_path, "ctl", "--model-arg", "tau=5")
    assert created["tau"] == 5


@pytest.mark.slow
def test_the_checkpoint_rebuilds_the_model_with_its_model_args(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "tp_mlp", "--dataset", "synthetic", "--epochs", "1",
                 "--model-arg", "hidden=16", "--model-arg", "dropout=0.1",
                 "--output", str(out), *TINY]) == 0
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    cfg = ckpt["config"]
    assert cfg["model_kwargs"] == {"backbone": "resnet18", "last_stride": 1, "hidden": 16,
                                   "num_layers": 2, "dropout": 0.1, "zero_init": False}
    assert cfg["args"]["model_arg"] == ["hidden=16", "dropout=0.1"]
    assert not any(k.startswith("_") for k in cfg["args"])
    model, _ = load_checkpoint(out / "checkpoint.pth")
    hidden = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert hidden[0].out_features == 16
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.modules())
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pth"), "--workers", "0",
                 "--no-progress"]) == 0


def test_margin_and_part_triplet_weight_reach_the_loss(tmp_path, monkeypatch):
    import stgraph.recipe as cli

    seen = {}

    def loss(num_classes, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(cli, "ReIDLoss", loss)
    with pytest.raises(_Stop):
        _train(tmp_path, "rru", "--margin", "0.4", "--part-triplet-weight", "0.5")
    assert seen["margin"] == 0.4 and seen["part_triplet_weight"] == 0.5
    seen.clear()
    with pytest.raises(_Stop):
        _train(tmp_path, "tp")
    assert seen["margin"] == 0.3 and seen["part_triplet_weight"] == 1.0


def test_values_take_the_type_of_the_constructor_argument(tmp_path, capsys, created):
    assert _train(tmp_path, "stgcn", "--model-arg", "num_patches=abc") == 2
    assert ("stgraph: error: --model-arg num_patches='abc': model stgcn: num_patches must be "
            "an integer, got 'abc'") in capsys.readouterr().err
    assert _train(tmp_path, "stgcn", "--model-arg", "num_layers=2.5") == 2
    assert "num_layers must be an integer, got 2.5" in capsys.readouterr().err
    assert _train(tmp_path, "stgcn", "--model-arg", "spatial_channels=None") == 2
    assert "spatial_channels=None is not allowed; give an integer" in capsys.readouterr().err
    assert created == {} and not (tmp_path / "o").exists()
    with pytest.raises(_Stop):  # an integer for a float argument becomes a float
        _train(tmp_path, "tp_mlp", "--model-arg", "dropout=0")
    assert created["dropout"] == 0.0 and isinstance(created["dropout"], float)


def test_out_of_range_values_name_the_argument_and_what_is_allowed(tmp_path, capsys):
    assert _train(tmp_path, "stgcn", "--model-arg", "spatial_channels=-5") == 2
    err = capsys.readouterr().err
    assert err == "stgraph: error: spatial_channels must be an integer >= 1, got -5\n"
    assert not (tmp_path / "o").exists()
    assert _train(tmp_path, "rru", "--model-arg", "spatial_grid=[0, 4]") == 2
    assert "spatial_grid_rows must be an integer >= 1, got 0" in capsys.readouterr().err
    assert _train(tmp_path, "ctl", "--model-arg", "heatmap_sigma=0") == 2
    assert "heatmap_sigma must be finite and > 0" in capsys.readouterr().err
