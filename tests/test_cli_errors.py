"""Bad input a new user gives the command line: one clear line each, nothing lost.

Every case here is one that once ended in a traceback, a raw errno or a silent wrong run
(issue 19): a batch that cannot fit in memory, feature maps too small for the head,
clips longer than every tracklet, a live run's output folder, a text file given as
weights, an output that cannot be written, a plot the model has not, NaN features, and a
checkpoint whose config another model's arguments.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stgraph import preflight
from stgraph.cli import main

TINY = ["--backbone", "resnet18", "--height", "64", "--width", "32", "--seq-len", "4",
        "--batch-ids", "4", "--batch-instances", "2", "--workers", "0", "--no-progress"]


def _train(tmp_path, *extra, model="tp", name="o"):
    args = ["train", "--model", model, "--dataset", "synthetic", "--epochs", "1",
            "--output", str(tmp_path / name), *TINY]
    # later flags win in argparse: extra overrides TINY's
    return main([*args, *extra])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp")
    assert main(["train", "--model", "tp", "--dataset", "synthetic", "--epochs", "1",
                 "--output", str(out), *TINY]) == 0
    return out / "checkpoint.pth"


# ------------------------------------------------------------------ memory, sizes, frames


def test_a_batch_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys):
    # 8 clips x 10^6 frames of resnet18 at 64 x 32 need terabytes on any machine
    assert _train(tmp_path, "--seq-len", "1000000") == 2
    err = capsys.readouterr().err
    assert "stgraph: error: a training batch of 8 clips x 1000000 frames at 64 x 32 needs " \
           "about" in err
    assert "lower --seq-len (at most" in err and "available on cpu" in err
    assert not (tmp_path / "o").exists()


def test_the_memory_estimate_names_the_batch_and_the_largest_seq_len_that_fits(monkeypatch):
    train_pf, eval_pf, shape = preflight.activation_bytes("resnet18", 64, 32)
    assert shape == (512, 4, 2) and train_pf > 5 * eval_pf > 0
    per_frame = train_pf + 2 * 3 * 64 * 32 * 4
    monkeypatch.setattr(preflight, "available_memory", lambda device: 100 * per_frame)
    est = preflight.check_memory("resnet18", 10, 64, 32, train_clips=8, test_clips=2)
    assert est["train"] == 80 * per_frame  # 8 clips x 10 frames fit in 90 frames' worth
    # the library names its arguments, the command line (for_cli) its flags
    with pytest.raises(MemoryError, match=r"training batch of 8 clips x 12 frames .* "
                                          r"lower seq_len \(at most 11 fits\), batch_ids / "
                                          r"batch_instances or height / width$") as err:
        preflight.check_memory("resnet18", 12, 64, 32, train_clips=8, test_clips=2)
    assert err.value.for_cli().endswith("lower --seq-len (at most 11 fits), --batch-ids / "
                                        "--batch-instances or --height / --width")
    with pytest.raises(MemoryError, match=r"test batch of 64 clips x 10 frames.*test_batch"):
        preflight.check_memory("resnet18", 10, 64, 32, train_clips=1, test_clips=64)


def test_the_activation_estimate_scales_with_the_frame(monkeypatch):
    small, _, _ = preflight.activation_bytes("resnet18", 64, 32)
    big, _, shape = preflight.activation_bytes("resnet18", 128, 64)
    assert shape == (512, 8, 4)
    assert big / small == pytest.approx(4, rel=0.1)  # activations, not the weights


def test_maps_too_small_for_the_head_are_refused_and_small_ones_warned(tmp_path, capsys):
    # STGCN's 4 stripes need 4 rows: 32 x 32 frames give 2 x 2 cells
    assert _train(tmp_path, "--height", "32", "--width", "32", model="stgcn") == 2
    err = capsys.readouterr().err
    assert "--height 32 --width 32 gives 2 x 2 feature-map cells (from 32 x 32 frames), " \
           "too few for model STGCN" in err
    assert not (tmp_path / "o").exists()
    # TP takes any map: 7 x 32 frames give 1 x 2 cells, trained with a warning
    assert _train(tmp_path, "--height", "7", "--width", "32") == 0
    err = capsys.readouterr().err
    assert "stgraph: warning: --height 7 --width 32 gives 1 x 2 feature-map cells" in err
    assert "below 4 x 2" in err


def test_clips_longer_than_every_training_tracklet_warn(tmp_path, capsys):
    assert preflight.repeated_frames(20, [8, 16, 12]) == 4
    assert preflight.repeated_frames(16, [8, 16]) is None
    assert _train(tmp_path, "--seq-len", "20", "--height", "32", "--width", "16") == 0
    err = capsys.readouterr().err
    assert ("--seq-len 20 exceeds the longest training tracklet (16 frames): every "
            "training clip repeats frames, at least 4 of its 20") in err


# ------------------------------------------------------------------ files


def test_a_live_runs_folder_is_in_use_not_interrupted(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "last.pth").write_bytes(b"")  # what a live run has written after epoch 1
    live = os.getppid()  # a process that is running, not this one
    (out / ".lock").write_text(f'{{"pid": {live}, "host": "{os.uname().nodename}"}}')
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err
    assert f"--output {out} is in use by a running process ({live}" in err
    assert "interrupted" not in err
    assert (out / ".lock").exists() and (out / "last.pth").exists()


def test_a_text_file_is_not_a_state_dict_nor_a_checkpoint(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes about the run\n")
    assert _train(tmp_path, "--pretrained", str(notes)) == 2
    assert (f"stgraph: error: pretrained weights {notes}: not a state dict: a text file "
            "(it starts 'my notes about the run'), not one torch.save wrote"
            ) in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(notes)]) == 2
    assert f"{notes} is not an stgraph checkpoint: a text file" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_output_folder_that_cannot_be_created_names_the_flag(tmp_path, capsys):
    assert _train(tmp_path, "--output", "/proc/stgout") == 2
    assert ("stgraph: error: --output /proc/stgout: cannot create a folder in /proc"
            in capsys.readouterr().err)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_write_errors_name_the_flag_and_the_file(checkpoint, tmp_path, capsys):
    for cmd in (["extract", "--checkpoint", str(checkpoint), "--workers", "0",
                 "--no-progress"],
                ["export", "--checkpoint", str(checkpoint)],
                ["plot", "--checkpoint", str(checkpoint), "--what", "ranking",
                 "--workers", "0", "--no-progress"]):
        assert main([*cmd, "--out", "/dev/full"]) == 2, cmd
        err = capsys.readouterr().err
        assert "stgraph: error: --out /dev/full: cannot write: No space left on device" in err


def test_extract_draws_no_bars_into_a_redirected_log(checkpoint, tmp_path, capsys):
    assert main(["extract", "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "q.npz"), "--workers", "0"]) == 0  # progress on, no tty
    out, err = capsys.readouterr()
    assert "embedding the 32 query tracklets" in out
    assert "it/s" not in err and "%|" not in err and "\r" not in err


# ------------------------------------------------------------------ models and features


def test_a_graph_plot_of_a_model_without_graphs_names_the_models_that_have_one(
        checkpoint, tmp_path, capsys):
    assert main(["plot", "--checkpoint", str(checkpoint), "--what", "temporal", "--out",
                 str(tmp_path / "t.png")]) == 2
    assert ("stgraph: error: --what temporal: model tp builds no graph; the graph plots are "
            "for ctl, stgcn") in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_rank_refuses_nan_features_before_printing_rankings(checkpoint, tmp_path, capsys):
    q = tmp_path / "q.npz"
    assert main(["extract", "--checkpoint", str(checkpoint), "--out", str(q), "--workers",
                 "0", "--no-progress"]) == 0
    data = dict(np.load(q, allow_pickle=False))
    data["features"] = np.full_like(data["features"], np.nan)
    bad = tmp_path / "nan.npz"
    np.savez(bad, **data)
    capsys.readouterr()
    assert main(["rank", "--query", str(q), "--gallery", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert f"stgraph: error: {bad}: 32 of 32 feature rows hold NaN" in err
    assert "d=nan" not in out and out == ""


@pytest.mark.parametrize("command", ["evaluate", "extract", "export"])
def test_a_checkpoint_with_another_models_arguments_names_both(checkpoint, tmp_path, capsys,
                                                                command):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["model_kwargs"]["tau"] = 3  # a CTL argument in a TP checkpoint
    bad = tmp_path / "bad.pth"
    torch.save(ckpt, bad)
    extra = [] if command == "evaluate" else ["--out", str(tmp_path / "x")]
    assert main([command, "--checkpoint", str(bad), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"stgraph: error: checkpoint {bad}: its config does not build model 'tp': model "
            "tp takes no argument 'tau'; its arguments: backbone, last_stride, pretrained"
            ) in err


def test_the_pre_bnneck_feature_can_be_ranked(checkpoint, tmp_path, capsys):
    from stgraph.checkpoint import load_checkpoint
    from stgraph.data import create_dataset
    from stgraph.engine import evaluate
    from stgraph.models.base import PreBNNeckEmbedding, ranked_by

    model, cfg = load_checkpoint(checkpoint)
    clips = torch.randn(2, 4, 3, 64, 32)
    with torch.no_grad():
        out = PreBNNeckEmbedding(model.eval())(clips)
        ref = model(clips)
    torch.testing.assert_close(out["embedding"], torch.cat(ref["features"], dim=1))
    assert not torch.allclose(out["embedding"], ref["embedding"])  # the BNNeck changes it
    assert ranked_by(model, "post-bnneck") is model
    with pytest.raises(ValueError, match="unknown eval feature 'x'"):
        ranked_by(model, "x")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--eval-feature", "pre-bnneck",
                 "--workers", "0", "--no-progress", "--output", str(tmp_path / "e")]) == 0
    got = __import__("json").loads((tmp_path / "e" / "metrics.json").read_text())
    want = evaluate(PreBNNeckEmbedding(model), create_dataset("synthetic"), 4, 64, 32,
                    progress=False)
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-9) and got["metric"] == "cosine"
