"""The command line end to end: train -> metrics.json + checkpoint -> evaluate; error paths."""

import json

import pytest
from PIL import Image

from stgraph.cli import (
    METRIC_KEYS,
    _dataset_config,
    _load_dataset,
    build_parser,
    load_checkpoint,
    main,
)

TINY = ["--backbone", "resnet18", "--height", "64", "--width", "32", "--seq-len", "4",
        "--batch-ids", "4", "--batch-instances", "2", "--workers", "0", "--no-progress"]


@pytest.mark.slow
def test_train_then_evaluate_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "stgcn", "--dataset", "synthetic", "--epochs", "5",
               "--num-patches", "2", "--batch-ids", "8", "--output", str(out), *TINY])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"] <= metrics["rank20"]
    # learning, not luck: 32 query identities vs 32 gallery tracklets -> chance rank-1 is 1/32
    assert metrics["num_query"] == 32 and metrics["num_gallery"] == 32
    assert metrics["rank1"] >= 8 / 32
    printed = capsys.readouterr().out
    assert "rank1" in printed and "%" in printed
    model, cfg = load_checkpoint(out / "checkpoint.pth")
    assert cfg["model"] == "stgcn" and cfg["seq_len"] == 4
    # re-evaluating the checkpoint reproduces the training run's figures exactly
    rc = main(["evaluate", "--checkpoint", str(out / "checkpoint.pth"), "--workers", "0",
               "--no-progress", "--output", str(tmp_path / "eval")])
    assert rc == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("rank1", "rank5", "mAP"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)


def test_missing_root_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "tp", "--dataset", "prid2011", "--root",
               str(tmp_path / "nowhere"), "--epochs", "1", "--output", str(out), *TINY])
    assert rc == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()


def test_malformed_split_file_names_the_file(tmp_path, capsys):
    root = tmp_path / "prid"
    for cam in ("cam_a", "cam_b"):
        (root / "multi_shot" / cam).mkdir(parents=True)
    split = tmp_path / "splits.json"
    split.write_text("{not json")
    out = tmp_path / "run"
    rc = main(["train", "--model", "tp", "--dataset", "prid2011", "--root", str(root),
               "--split-file", str(split), "--epochs", "1", "--output", str(out), *TINY])
    assert rc == 2
    assert "splits.json" in capsys.readouterr().err
    assert not out.exists()


def test_root_required_for_image_datasets(tmp_path):
    with pytest.raises(SystemExit, match="--root is required"):
        main(["train", "--model", "tp", "--dataset", "prid2011", "--epochs", "1",
              "--output", str(tmp_path / "x"), *TINY])


def test_keypoints_flag_reaches_the_dataset(tmp_path):
    root = tmp_path / "prid"
    for cam in ("cam_a", "cam_b"):
        for person in (1, 2):
            d = root / "multi_shot" / cam / f"person_{person:04d}"
            d.mkdir(parents=True)
            Image.new("RGB", (4, 8)).save(d / "0001.png")
    entry = {"image_id": "multi_shot/cam_b/person_0002/0001.png", "category_id": 1,
             "keypoints": [1.0, 2.0, 0.5] * 17, "score": 0.9}
    kp = tmp_path / "kp.json"
    kp.write_text(json.dumps([entry]))
    args = build_parser().parse_args(["train", "--model", "tp", "--dataset", "prid2011",
                                      "--root", str(root), "--keypoints", str(kp),
                                      "--output", str(tmp_path / "o")])
    with pytest.warns(UserWarning, match="3 of 4 frames have no keypoints"):
        ds = _load_dataset(_dataset_config(args))
    assert ds.frame_keypoints(str(root / entry["image_id"]))[0].tolist() == [1.0, 2.0, 0.5]
    args.dataset, args.root = "synthetic", None
    with pytest.raises(SystemExit, match="--keypoints is not for --dataset synthetic"):
        _dataset_config(args)


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in capsys.readouterr().err
