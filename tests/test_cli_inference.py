"""stgraph extract / rank / export on a tiny checkpoint."""

import numpy as np
import pytest
import torch

from stgraph.cli import main, save_checkpoint
from stgraph.cli_inference import load_features
from stgraph.data import SyntheticReID
from stgraph.engine import evaluate
from stgraph.models import create_model

T, H, W = 4, 64, 32
SYN = {"num_train_ids": 2, "num_test_ids": 3, "min_frames": 3, "max_frames": 9,
       "image_size": [64, 32], "seed": 1}


def _checkpoint(tmp_path, name="tp", **kw):
    torch.manual_seed(0)
    kw = {"backbone": "resnet18", **kw}
    model = create_model(name, num_classes=2, **kw).eval()
    metrics = dict.fromkeys(("rank1", "rank5", "rank10", "rank20", "mAP"), 0.0)
    metrics.update(num_query=1, num_gallery=1)
    path = save_checkpoint(tmp_path / f"{name}.pth", model, {
        "model": name, "model_kwargs": kw, "num_classes": 2,
        "dataset": {"name": "synthetic", **SYN}, "seq_len": T, "height": H, "width": W},
        metrics)
    return path, model


def test_extract_and_rank_a_dataset(tmp_path, capsys):
    ckpt, model = _checkpoint(tmp_path)
    for split in ("query", "gallery"):
        assert main(["extract", "--checkpoint", str(ckpt), "--split", split, "--out",
                     str(tmp_path / f"{split}.npz"), "--no-progress",
                     "--test-batch", "32"]) == 0
    q = load_features(tmp_path / "query.npz")
    data = SyntheticReID(**{**SYN, "image_size": (64, 32)})
    assert q["features"].shape == (len(data.query), 512)
    assert q["pids"].tolist() == [t.pid for t in data.query]
    assert q["camids"].tolist() == [t.camid for t in data.query]
    assert q["names"] == [f"query/{i}" for i in range(len(data.query))]
    assert q["model"] == "tp"
    capsys.readouterr()
    assert main(["rank", "--query", str(tmp_path / "query.npz"), "--gallery",
                 str(tmp_path / "gallery.npz"), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "query 0 query/0 (pid" in out and "    1. gallery/" in out
    assert "    3. " not in out  # --top 2
    expected = evaluate(model, data, T, H, W, progress=False)
    row = " | ".join(f"{100 * expected[c]:6.2f}%"
                     for c in ("rank1", "rank5", "rank10", "rank20", "mAP"))
    assert row in out  # the CMC / mAP of evaluate on the same tracklets


def test_extract_a_folder_and_rank_without_ids(tmp_path, capsys):
    ckpt, model = _checkpoint(tmp_path)
    data = SyntheticReID(**{**SYN, "image_size": (64, 32)})
    root = tmp_path / "frames"
    for name, t in (("b_track", data.query[0]), ("a_track", data.gallery[1])):
        (root / name).mkdir(parents=True)
        for i, k in enumerate(t.frames):
            data.read_frame(k).save(root / name / f"{i:03d}.png")
    (root / "empty").mkdir()
    assert main(["extract", "--checkpoint", str(ckpt), "--frames-dir", str(root), "--out",
                 str(tmp_path / "f.npz"), "--no-progress"]) == 0
    f = load_features(tmp_path / "f.npz")
    assert f["names"] == ["a_track", "b_track"] and f["pids"].tolist() == [-1, -1]
    assert f["camids"].tolist() == [-1, -1]
    from stgraph.inference import FeatureExtractor

    fx = FeatureExtractor(model, seq_len=T, height=H, width=W)
    torch.testing.assert_close(f["features"][1], fx.embed_dataset(data, [data.query[0]])[0],
                               atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    assert main(["rank", "--query", str(tmp_path / "f.npz"), "--gallery",
                 str(tmp_path / "f.npz"), "--metric", "cosine"]) == 0
    out = capsys.readouterr().out
    assert "query 0 a_track\n    1. a_track  d=0.0000" in out
    assert "pids unknown (-1): no CMC / mAP" in out


def test_errors(tmp_path, capsys):
    ckpt, _ = _checkpoint(tmp_path)
    assert main(["extract", "--checkpoint", str(ckpt), "--frames-dir", str(tmp_path / "none"),
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert "frames folder not found" in capsys.readouterr().err
    assert main(["extract", "--checkpoint", str(ckpt), "--frames-dir", str(tmp_path),
                 "--split", "query", "--out", str(tmp_path / "x.npz")]) == 2
    assert "not with --dataset or --split" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", features=np.zeros((2, 3)))
    assert main(["rank", "--query", str(tmp_path / "bad.npz"), "--gallery",
                 str(tmp_path / "bad.npz")]) == 2
    assert "not a features file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["ctl", "stgcn"])
def test_export_checkpoint(tmp_path, capsys, name):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                        "(pip install 'stgraph[export]')")
    kw = {"seq_len": T, "num_patches": 2, "backend": "pyg"} if name == "stgcn" else {}
    ckpt, _ = _checkpoint(tmp_path, name, **kw)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx"),
                 "--check"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'm.onnx'}: {name}, clips (B, 4, 3, 64, 32)" in out
    assert ("keypoints (B, T, 17, 3)" in out) == (name == "ctl")
    worst = float(out.split("max |difference| ")[1].split()[0])
    assert worst < 1e-4
