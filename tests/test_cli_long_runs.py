"""stgraph train for long runs: kill and resume, checks before the first step, logs, locks.

The kill test launches ``python -m stgraph train`` in subprocesses, SIGKILLs one after its
first epoch and resumes it; the others call :func:`stgraph.cli.main` in-process.
"""

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stgraph
from stgraph.cli import main

# smaller than the other CLI tests' TINY: 32 x 16 pixels, T = 2 (about 3 s per epoch)
SMALL = ["--model", "tp", "--dataset", "synthetic", "--backbone", "resnet18", "--height", "32",
         "--width", "16", "--seq-len", "2", "--batch-ids", "8", "--batch-instances", "2",
         "--test-batch", "64", "--no-progress"]
ROOT = Path(stgraph.__file__).resolve().parents[1]


def _env(**extra):
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), **extra}


def _stgraph(*args, **env):
    return subprocess.run([sys.executable, "-m", "stgraph", *args], env=_env(**env),
                          capture_output=True, text=True, timeout=900)


def _state(path):
    return torch.load(path, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_killed_run_resumes_bit_identically(tmp_path, workers):
    args = ["train", *SMALL, "--epochs", "3", "--seed", "5", "--workers", str(workers)]
    full = _stgraph(*args, "--output", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    pausing = Path(__file__).with_name("pausing_train.py")  # stgraph, pausing after epoch 1
    proc = subprocess.Popen([sys.executable, str(pausing), *args, "--output", str(out)],
                            env=_env(STGRAPH_TEST_PAUSE_AFTER_EPOCH="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "paused after epoch 1" in line:
                break
        else:
            pytest.fail("the run ended before pausing:\n" + "".join(seen))
        proc.send_signal(signal.SIGKILL)  # a real kill -9: no handler, no cleanup
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert _state(out / "last.pth")["trainer"]["epoch"] == 1
    assert not (out / "checkpoint.pth").exists() and (out / ".lock").exists()
    # without --resume the interrupted run is not overwritten
    again = _stgraph(*args, "--output", str(out))
    assert again.returncode == 2 and "interrupted run" in again.stderr
    assert "Traceback" not in again.stderr
    resumed = _stgraph(*args, "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "stale lock" in resumed.stderr and "1 of 3 epochs done" in resumed.stdout
    a = _state(tmp_path / "full" / "checkpoint.pth")["state_dict"]
    b = _state(out / "checkpoint.pth")["state_dict"]
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma = json.loads((tmp_path / "full" / "metrics.json").read_text())
    mb = json.loads((out / "metrics.json").read_text())
    assert ma["mAP"] == mb["mAP"] and ma["rank1"] == mb["rank1"]
    assert [r["loss"] for r in ma["history"]] == [r["loss"] for r in mb["history"]]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_resume_eval_every_best_logs_and_permissions(tmp_path, capsys):
    out = tmp_path / "run"
    old = os.umask(0o002)
    try:
        assert main(["train", *SMALL, "--epochs", "1", "--workers", "0", "--eval-every", "1",
                     "--output", str(out)]) == 0
    finally:
        os.umask(old)
    printed = capsys.readouterr()
    assert "=> SyntheticReID" in printed.out  # --no-progress keeps the dataset summary
    assert "epoch 1/1  loss" in printed.out and "| eval rank1" in printed.out
    for name in ("checkpoint.pth", "metrics.json", "last.pth", "best.pth", "log.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o664, name  # the umask's
    (line,) = (out / "log.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert {"epoch", "loss", "ce", "triplet", "acc", "lr", "seconds", "mAP", "rank1"} <= set(
        record)
    cfg = _state(out / "checkpoint.pth")["config"]
    assert Path(cfg["args"]["output"]).is_absolute()
    # a finished run is not overwritten; a resume with another setting is refused, naming it
    assert main(["train", *SMALL, "--epochs", "1", "--workers", "0", "--eval-every", "1",
                 "--output", str(out)]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert main(["train", *SMALL, "--epochs", "2", "--workers", "0", "--eval-every", "1",
                 "--lr", "0.001", "--seed", "1", "--output", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.001 (last.pth: 0.00035)" in err and "--seed 1 (last.pth: 0)" in err
    # --epochs may grow: the run continues from epoch 1
    assert main(["train", *SMALL, "--epochs", "2", "--workers", "0", "--eval-every", "1",
                 "--output", str(out), "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    best = _state(out / "best.pth")
    assert best["metrics"]["mAP"] == pytest.approx(metrics["best"]["mAP"])
    assert max(r["mAP"] for r in metrics["history"]) == metrics["best"]["mAP"]
    # stgraph evaluate reads best.pth and last.pth
    assert main(["evaluate", "--checkpoint", str(out / "last.pth"), "--workers", "0",
                 "--no-progress"]) == 0


@pytest.mark.slow
def test_deterministic_runs_write_identical_metrics(tmp_path):
    for name in ("a", "b"):
        assert main(["train", *SMALL, "--epochs", "1", "--workers", "0", "--seed", "3",
                     "--deterministic", "--output", str(tmp_path / name)]) == 0
    torch.use_deterministic_algorithms(False)

    def strip(path):
        m = json.loads(path.read_text())
        for r in m["history"]:
            r.pop("seconds")
        return {k: v for k, v in m.items() if "seconds" not in k}

    assert strip(tmp_path / "a" / "metrics.json") == strip(tmp_path / "b" / "metrics.json")


def test_nan_loss_stops_with_a_message_and_keeps_last(tmp_path, capsys, monkeypatch):
    import stgraph.recipe as cli

    real = cli.ReIDLoss
    calls = {"n": 0}

    class NaNAfterOneEpoch(real):
        def forward(self, outputs, pids):
            loss, parts = super().forward(outputs, pids)
            calls["n"] += 1
            return (loss * float("nan") if calls["n"] > 8 else loss), parts

    monkeypatch.setattr(cli, "ReIDLoss", NaNAfterOneEpoch)
    out = tmp_path / "run"
    # 64 training identities / 8 per batch: 8 steps per epoch, the 9th is NaN
    assert main(["train", *SMALL, "--epochs", "2", "--workers", "0", "--output",
                 str(out)]) == 1
    err = capsys.readouterr().err
    assert "training stopped: loss is nan at epoch 2, step 1" in err
    assert "last.pth keeps epoch 1" in err and "Traceback" not in err
    assert _state(out / "last.pth")["trainer"]["epoch"] == 1
    assert not (out / "checkpoint.pth").exists() and not (out / ".lock").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--seq-len", "-3", "argument --seq-len: must be >= 1, got -3"),
    ("--epochs", "0", "argument --epochs: must be >= 1, got 0"),
    ("--test-batch", "0", "argument --test-batch: must be >= 1, got 0"),
    ("--batch-ids", "1", "argument --batch-ids: must be >= 2, got 1: the batch-hard triplet"),
    ("--batch-instances", "1", "argument --batch-instances: must be >= 2, got 1"),
    ("--lr", "0", "argument --lr: must be > 0"),
    ("--erasing", "1.5", "argument --erasing: must be >= 0 and <= 1"),
])
def test_numbers_out_of_range_are_argparse_errors(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *SMALL, "--output", str(tmp_path / "o"), flag, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_settings_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--root is not for --dataset synthetic"):
        main(["train", *SMALL, "--root", "x", "--output", str(tmp_path / "o")])
    if not torch.cuda.is_available():
        assert main(["train", *SMALL, "--device", "cuda", "--output",
                     str(tmp_path / "o")]) == 2
        assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert main(["train", *SMALL, "--device", "nonsense", "--output",
                 str(tmp_path / "o")]) == 2
    assert "--device nonsense: not a device" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["train", *SMALL, "--output", str(bad)]) == 2
        assert "is a file" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["train", *SMALL, "--output", str(ro / "run")]) == 2
        assert "is not writable" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_output_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": other.pid,
                                               "host": __import__("socket").gethostname()}))
        assert main(["train", *SMALL, "--epochs", "1", "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by a running process ({other.pid}" in err
    finally:
        other.kill()
        other.wait()
    assert json.loads((out / ".lock").read_text())["pid"] == other.pid  # left alone


def test_evaluate_refuses_broken_checkpoints_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pth"
    buf = tmp_path / "full.pth"
    torch.save({"config": {}, "state_dict": {"w": torch.zeros(1000)}}, buf)
    truncated.write_bytes(buf.read_bytes()[:500])
    module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module)
    for path, message in ((empty, "is empty (0 bytes)"), (truncated, "truncated or corrupt"),
                          (module, "holds pickled Python objects")):
        assert main(["evaluate", "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1


def test_help_shows_defaults_and_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "plot" in text and "``" not in text and "evaluate" in text and "cache" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: resnet50)", "(default: 256)", "(default: 128)", "(default: 8)",
                    "(default: 10)", "(default: 0.00035)", "(default: 0)"):
        assert default in text, default


def test_python_dash_m_stgraph_is_the_command():
    result = _stgraph("--help")
    assert result.returncode == 0 and "usage: stgraph" in result.stdout


def _prid(root, persons=4, frames=3, size=(16, 32)):
    for cam in ("cam_a", "cam_b"):
        for person in range(1, persons + 1):
            d = root / "multi_shot" / cam / f"person_{person:04d}"
            d.mkdir(parents=True)
            for f in range(1, frames + 1):
                Image.new("RGB", size, (10 * person, 80, 40 * f)).save(d / f"{f:04d}.png")


@pytest.mark.parametrize("where", ["test", "train"])
def test_an_unreadable_frame_is_one_line_naming_it(tmp_path, capsys, where):
    from stgraph.data import PRID2011

    root = tmp_path / "prid"
    _prid(root)
    ds = PRID2011(root)
    tracklet = (ds.query if where == "test" else ds.train)[0]
    bad = Path(tracklet.frames[1])
    bad.write_bytes(b"not a png")
    out = tmp_path / "run"
    rc = main(["train", "--model", "tp", "--dataset", "prid2011", "--root", str(root),
               "--backbone", "resnet18", "--height", "32", "--width", "16", "--seq-len", "2",
               "--batch-ids", "2", "--batch-instances", "2", "--epochs", "1", "--workers", "2",
               "--no-progress", "--output", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot read frame" in err and "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if "stgraph: warning:" not in line]
    assert len(errors) == 1, err  # one line for the error (32 x 16 frames also warn)
    assert not (out / "last.pth").exists()  # test frames: refused before the first step
    assert not (out / ".lock").exists()


def test_check_data_decodes_every_frame(tmp_path, capsys):
    from stgraph.data import PRID2011

    root = tmp_path / "prid"
    _prid(root)
    ds = PRID2011(root)
    assert ds.check_frames(ds.train + ds.query + ds.gallery, decode=True) == 24
    png = Path(ds.train[0].frames[0])
    png.write_bytes(png.read_bytes()[:-30])  # truncated
    with pytest.raises(OSError, match="cannot read frame"):
        ds.check_frames(ds.train)  # the header check (PIL's verify) sees it too
    assert ds.check_frames(ds.query + ds.gallery) == 12  # the default checks test frames
    rc = main(["train", "--model", "tp", "--dataset", "prid2011", "--root", str(root),
               "--backbone", "resnet18", "--height", "32", "--width", "16", "--seq-len", "2",
               "--batch-ids", "2", "--batch-instances", "2", "--epochs", "1", "--workers", "0",
               "--no-progress", "--check-data", "--output", str(tmp_path / "run")])
    assert rc == 2  # --check-data: refused before the first step
    assert str(png) in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pth").exists()


def test_16_bit_grayscale_frames_are_scaled_not_clipped(tmp_path):
    from stgraph.data import PRID2011

    root = tmp_path / "prid"
    _prid(root, persons=2, frames=1)
    ds = PRID2011(root)
    key = ds.train[0].frames[0]
    values = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(key)  # mode I;16, a 16-bit grayscale PNG
    assert Image.open(key).mode in ("I;16", "I")
    img = ds.read_frame(key)
    assert img.mode == "RGB"
    assert np.asarray(img)[..., 0].tolist() == [[0, 64], [128, 255]]


def test_keypoints_outside_the_frame_or_scored_above_1_are_refused(tmp_path):
    from stgraph.data import PRID2011, load_clip_with_keypoints
    from stgraph.graph import load_coco_keypoints

    root = tmp_path / "prid"
    _prid(root, persons=2, frames=1, size=(16, 32))
    image = "multi_shot/cam_a/person_0001/0001.png"
    kp = [8.0, 10.0, 0.9] * 17
    path = tmp_path / "kp.json"
    path.write_text(json.dumps([{"image_id": image, "keypoints": [*kp[:-1], 1.5]}]))
    with pytest.raises(ValueError, match=r"kp\.json.*score 1\.5, outside \[0, 1\]"):
        load_coco_keypoints(path)
    path.write_text(json.dumps([{"image_id": image, "keypoints": [-3.0, *kp[1:]]}]))
    with pytest.raises(ValueError, match=r"kp\.json.*keypoint 0 at \(-3, 10\).*negative"):
        load_coco_keypoints(path)
    path.write_text(json.dumps([{"image_id": image, "keypoints": [40.0, *kp[1:]]}]))
    with pytest.warns(UserWarning):
        ds = PRID2011(root, keypoints=path)
    frame = str(root / image)
    with pytest.raises(ValueError, match=r"0001\.png.*kp\.json.*lies outside the 16 x 32"):
        load_clip_with_keypoints(ds, [frame], 32, 16)
    with pytest.raises(ValueError, match="lies outside"):
        ds.check_frames(ds.train + ds.query + ds.gallery)
    # a missing keypoint (score 0) may lie anywhere
    path.write_text(json.dumps([{"image_id": image, "keypoints": [40.0, 10.0, 0.0, *kp[3:]]}]))
    with pytest.warns(UserWarning):
        ds = PRID2011(root, keypoints=path)
    load_clip_with_keypoints(ds, [frame], 32, 16)


def test_checkpoints_record_absolute_dataset_paths(tmp_path, monkeypatch):
    from stgraph.cli import _dataset_config, build_parser

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--model", "tp", "--dataset", "prid2011",
                                      "--root", "data/prid", "--split-file", "s.json",
                                      "--output", "o"])
    cfg = _dataset_config(args)
    assert cfg["root"] == str(tmp_path / "data" / "prid")
    assert cfg["split_file"] == str(tmp_path / "s.json")
    # stgraph evaluate --root: the recorded root is replaced, the rest kept
    args = build_parser().parse_args(["evaluate", "--checkpoint", "c.pth", "--root", "elsewhere"])
    assert _dataset_config(args, base=cfg) == {**cfg, "root": str(tmp_path / "elsewhere")}
