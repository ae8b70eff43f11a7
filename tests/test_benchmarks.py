"""The benchmark scripts run (``--quick`` sizes) and report consistent numbers.

Speed itself is the benchmarks' business, not the tests': these only check that each
script runs end to end, writes its JSON, and that what it reports holds together (shares
are ratios of the times it reports, FLOP counts are positive, dense == sparse outputs).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_models_quick(tmp_path, capsys):
    out = tmp_path / "models.json"
    res = _load("models").main(["--quick", "--models", "tp", "stgcn", "--repeats", "1",
                                "--warmup", "0", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text())["models"][1]["model"] == "stgcn"
    for r in res["models"]:
        assert 0 < r["head_s"] < r["step_s"]
        assert r["head_share"] == pytest.approx(r["head_s"] / r["backbone_s"])
        assert r["clips_per_s"] == pytest.approx(2 / r["step_s"])
        assert r["head_params"] == r["params"] - r["backbone_params"] > 0
    tp, stgcn = res["models"]
    assert stgcn["head_params"] > tp["head_params"]  # the graph branches' weights
    assert res["target"]["stgcn_head_share"] == stgcn["head_share"]
    assert "target (issue 5)" in capsys.readouterr().out


def test_models_amp_rows(tmp_path, capsys):
    res = _load("models").main(["--quick", "--models", "tp", "--amp", "--repeats", "1",
                                "--warmup", "0", "--threads", "1",
                                "--out", str(tmp_path / "m.json")])
    assert [r["amp"] for r in res["models"]] == [False, True]
    fp32, amp = res["models"]
    assert res["amp_speedup"]["tp"]["speedup"] == pytest.approx(
        amp["clips_per_s"] / fp32["clips_per_s"])
    assert "--amp (training step clips/s): tp" in capsys.readouterr().out


def test_models_triton_rows_under_the_interpreter(tmp_path, monkeypatch):
    # conftest sets TRITON_INTERPRET=1 without a GPU: the Triton rows run (slowly) on the CPU
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    res = _load("models").main(["--quick", "--models", "tp", "stgcn", "--backends", "torch",
                                "triton", "--seq-len", "2", "--repeats", "1", "--warmup", "0",
                                "--threads", "1", "--out", str(tmp_path / "m.json")])
    rows = {(r["model"], r["backend"]) for r in res["models"]}
    assert rows == {("tp", None), ("stgcn", "torch"), ("stgcn", "triton")}  # TP has no graph
    by = {r["backend"]: r for r in res["models"] if r["model"] == "stgcn"}
    target = res["target"]
    assert target["triton_speedup"]["stgcn"] == pytest.approx(
        by["torch"]["head_s"] / by["triton"]["head_s"])
    fastest = min(by.values(), key=lambda r: r["head_s"])
    assert target["stgcn_head_backend"] == fastest["backend"]
    assert target["stgcn_head_share"] == fastest["head_share"]


def test_models_triton_needs_a_gpu_or_the_interpreter(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(SystemExit):
        _load("models").main(["--quick", "--backends", "triton"])
    assert "--backends triton needs --device cuda" in capsys.readouterr().err


def test_models_rejects_one_clip(capsys):
    with pytest.raises(SystemExit):
        _load("models").main(["--quick", "--batch", "1"])
    assert "--batch must be >= 2" in capsys.readouterr().err


def test_profile_heads_quick(tmp_path):
    out = tmp_path / "profile.json"
    res = _load("profile_heads").main(["--quick", "--models", "tp", "stgcn", "--repeats", "1",
                                       "--warmup", "0", "--profile-calls", "1",
                                       "--threads", "1", "--out", str(out)])
    assert out.is_file()
    tp, stgcn = res["models"]
    # STGCN's graph layers are matrix products: many more head FLOPs than TP's BNNeck
    assert stgcn["head_gflop"] > 10 * tp["head_gflop"] > 0
    for r in res["models"]:
        assert r["flop_share"] == pytest.approx(r["head_gflop"] / r["backbone_gflop"])
        assert r["time_share"] == pytest.approx(r["head_s"] / r["backbone_s"])
        ops = r["operators"]
        assert 0 < ops["matmul_share"] <= 1 and ops["total_ms"] > 0
        shares = [row["share"] for row in ops["top"]]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
    assert stgcn["operators"]["top"][0]["op"] in ("aten::mm", "aten::bmm", "aten::addmm")


def test_layers_quick(tmp_path):
    res = _load("layers").main(["--quick", "--repeats", "1", "--warmup", "0",
                                "--threads", "1", "--out", str(tmp_path / "layers.json")])
    assert res["cases"]
    for case in res["cases"]:
        measured = [r for r in case["rows"] if r["status"] == "measured"]
        assert any(r["kind"] == "dense" for r in measured)
        for r in measured:
            if r.get("max_rel_diff") is not None:  # the sparse twin's output == the dense one
                assert r["max_rel_diff"] < 1e-4
    assert "temporal" in " ".join(res["target"]["cases"])


def test_eval_speed_quick(tmp_path):
    res = _load("eval_speed").main(["--quick", "--repeats", "1", "--ref-queries", "20",
                                    "--no-rerank", "--out", str(tmp_path / "eval.json")])
    for protocol in ("torchreid", "mars-official"):
        r = res["protocols"][protocol]
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0
        assert r["same_results"]["identical"]  # the vectorised CMC/mAP == the reference loop


def test_cache_quick(tmp_path, capsys):
    out = tmp_path / "cache.json"
    res = _load("cache").main(["--quick", "--models", "tp", "stgcn", "--threads", "1",
                               "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["build"]["frames"] == res["build"]["frames"] > 0
    assert [e["model"] for e in saved["epochs"]] == ["tp", "stgcn"]
    for e in res["epochs"]:
        assert e["seconds"] > 0 and e["batches"] > 0 and e["peak_rss_mb"] > 0
    # the partial protocol (the default cut): the backbone's tail (Lite0's head conv and
    # its BN) trains with the head, whose size differs between TP and STGCN
    assert saved["settings"]["cut"] == "head" and res["build"]["map_shape"][0] == 320
    tail = 320 * 1280 + 2 * 1280
    assert res["epochs"][0]["trained_parameters"] > tail
    assert res["epochs"][0]["trained_parameters"] < res["epochs"][1]["trained_parameters"]
    assert "cache at cut 'head'" in capsys.readouterr().out
    frozen = _load("cache").main(["--quick", "--models", "tp", "--threads", "1", "--cut",
                                  "end", "--out", str(tmp_path / "end.json")])
    assert frozen["build"]["map_shape"][0] == 1280  # the frozen backbone trains nothing
    assert frozen["epochs"][0]["trained_parameters"] == res["epochs"][0][
        "trained_parameters"] - tail


def test_ctl_diagnostics_quick(tmp_path):
    out = tmp_path / "ctl.json"
    res = _load("ctl_diagnostics").main(["--quick", "--out", str(out)])
    heat = res["heatmaps"]
    # a lower temperature concentrates the maps: parts move away from the global feature
    assert [r["temperature"] for r in heat] == [1.0, 0.5, 0.2, 0.1]
    assert heat[-1]["cos_part_global"] < heat[0]["cos_part_global"]
    assert heat[-1]["tv_from_uniform"] > heat[0]["tv_from_uniform"]
    scaled = [r for r in res["cross_scale"] if r["scaled"]]
    unscaled = [r for r in res["cross_scale"] if not r["scaled"]]
    assert all(s["mean_max_weight"] < u["mean_max_weight"]
               for s, u in zip(scaled, unscaled, strict=True))
    grads = {r["setting"]: r["part_over_global"] for r in res["gradients"]}
    # the mean over 5 parts sends less gradient through the parts than their sum
    assert grads["mean"] < grads["paper: sum"]
    assert json.loads(out.read_text())["gradients"][0]["setting"] == "paper: sum"


def test_accuracy_quick(capsys, tmp_path):
    accuracy = _load("accuracy")
    first = tmp_path / "first.json"
    args = ["--quick", "--models", "tp", "stgcn", "--seeds", "0", "1", "--runs",
            str(tmp_path / "runs")]
    res = accuracy.main([*args, "--out", str(first)])
    rows = {r["model"]: r for r in res["partial"]}  # the default protocol
    assert set(rows) == {"tp", "stgcn"} and rows["tp"]["seeds"] == 2
    for r in rows.values():
        ranks = [s["rank1"] for s in r["per_seed"]]
        assert r["rank1"] == pytest.approx(100 * sum(ranks) / len(ranks))
        assert 0 <= r["rank1"] <= r["rank5"] <= 100
    # the same tail trains in both: STGCN's head has more trainable parameters than TP's
    assert rows["stgcn"]["trainable_parameters"] > rows["tp"]["trainable_parameters"]
    # runs rank by cosine (the default) and are re-evaluated with euclidean
    run0 = tmp_path / "runs" / "partial" / "tp" / "seed0"
    assert json.loads((run0 / "metrics.json").read_text())["metric"] == "cosine"
    assert (run0 / "metrics_euclidean.json").is_file()
    assert rows["tp"]["cos_rank1"] == pytest.approx(100 * json.loads(
        (tmp_path / "runs" / "partial" / "tp" / "seed0" / "metrics.json").read_text())[
        "rank1"] / 2 + 100 * json.loads((tmp_path / "runs" / "partial" / "tp" / "seed1" /
                                          "metrics.json").read_text())["rank1"] / 2)
    assert all(c["command"].startswith("stgraph train --model") for c in res["commands"])
    assert "--feature-cache" in res["commands"][0]["command"]
    assert "| tp | 2 |" in capsys.readouterr().out
    # --merge: a run whose folder is gone is taken from the earlier JSON, by its command
    gone = tmp_path / "runs" / "partial" / "stgcn" / "seed1" / "metrics.json"
    gone.unlink()
    assert accuracy.main([*args, "--no-run", "--out", str(tmp_path / "a.json")])[
        "partial"][1]["seeds"] == 1
    merged = accuracy.main([*args, "--no-run", "--merge", str(first),
                            "--out", str(tmp_path / "b.json")])
    stgcn = {r["model"]: r for r in merged["partial"]}["stgcn"]
    assert stgcn["seeds"] == 2 and stgcn["rank1"] == pytest.approx(rows["stgcn"]["rank1"])
    assert stgcn["mAP"] == pytest.approx(rows["stgcn"]["mAP"])
    sources = [c.get("from") for c in merged["commands"]]
    assert sources.count(str(first)) == 1 and sources[-1] == str(first)
    # a run ranked with padded last clips (before they overlapped; its metrics have no
    # last_clip) is re-evaluated with today's clips for both distances, the old files
    # kept; an earlier JSON entry made so is not merged
    for name in ("metrics.json", "metrics_euclidean.json"):
        old = json.loads((run0 / name).read_text())
        old.pop("last_clip")
        old["rank1"] = -1.0  # a figure no evaluation gives: it must not reach the table
        (run0 / name).write_text(json.dumps(old))
    stale = json.loads(first.read_text())
    for c in stale["commands"]:
        c.pop("last_clip")
    first.write_text(json.dumps(stale))
    again = accuracy.main([*args, "--no-run", "--merge", str(first),
                           "--out", str(tmp_path / "c.json")])
    again_rows = {r["model"]: r for r in again["partial"]}
    assert again_rows["tp"]["seeds"] == 2 and again_rows["stgcn"]["seeds"] == 1
    assert again_rows["tp"]["cos_rank1"] == pytest.approx(rows["tp"]["cos_rank1"])
    assert again_rows["tp"]["rank1"] == pytest.approx(rows["tp"]["rank1"])
    assert json.loads((run0 / "metrics_euclidean_pad.json").read_text())["rank1"] == -1.0
    assert json.loads((run0 / "metrics_cosine.json").read_text())["last_clip"] == "overlap"
    assert "not taking" in capsys.readouterr().out


def test_branches_on_an_untrained_stgcn(tmp_path):
    """An untrained BNNeck is the identity (up to its eps): the global branch ranks as GAP."""
    import torch

    from stgraph.cache import build_feature_cache, cache_settings
    from stgraph.cli import save_checkpoint
    from stgraph.data import SyntheticReID
    from stgraph.engine import rank_features
    from stgraph.models import create_model

    data = SyntheticReID(num_train_ids=4, num_test_ids=6, min_frames=2, max_frames=4,
                         image_size=(64, 32), seed=1)
    torch.manual_seed(0)
    model = create_model("stgcn", num_classes=data.num_train_pids, backbone="resnet18",
                         seq_len=2)
    settings = cache_settings({"name": "synthetic"}, "resnet18", None, 1, 64, 32)
    cache = build_feature_cache(data, model.backbone, tmp_path / "c", settings, progress=False)
    ckpt = save_checkpoint(tmp_path / "m.pth", model, {
        "model": "stgcn", "model_kwargs": {"backbone": "resnet18", "seq_len": 2},
        "num_classes": data.num_train_pids, "seq_len": 2},
        {k: 0.0 for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "num_query",
                          "num_gallery")})
    res = _load("branches").main([str(ckpt), "--cache", str(tmp_path / "c"),
                                  "--out", str(tmp_path / "b.json")])
    row = res["checkpoints"][0]
    assert {k.split("/")[0] for k in row if "/" in k} == {"temporal", "spatial", "global",
                                                          "embedding"}

    def gap(ts):  # per tracklet: mean over its clips (T = 2, last frame repeated) of GAP
        out = []
        for t in ts:
            rows = list(t.rows) + [t.rows[-1]] * (len(t.rows) % 2)
            out.append(cache.read(rows)[0].mean(dim=(2, 3)).mean(dim=0))
        return torch.stack(out)

    want = rank_features(gap(cache.query), gap(cache.gallery), cache.query, cache.gallery,
                         metric="euclidean")
    assert row["global/euclidean"]["mAP"] == pytest.approx(100 * want["mAP"], abs=1e-3)
    # the global branch is itself; STGCN's graph branches are other features
    cos = row["global_cosine"]
    assert cos["global"] == pytest.approx(1.0, abs=1e-5)
    assert set(cos) <= {"global", "temporal", "spatial"} and len(cos) >= 2
    assert all(v < 0.999 for k, v in cos.items() if k != "global")


def test_branches_from_frames_match_the_evaluation_of_the_model():
    """Without a cache (fine-tuned runs) every branch is ranked from the frames: the
    embedding block ranks exactly as stgraph.eval.evaluate ranks the model, and each
    branch block is that branch's post-BNNeck feature averaged over the tracklet's clips."""
    import torch

    from stgraph.data import SyntheticReID
    from stgraph.data.clips import TestClipDataset
    from stgraph.eval import evaluate, rank_features
    from stgraph.models import create_model

    data = SyntheticReID(num_train_ids=4, num_test_ids=6, min_frames=2, max_frames=4,
                         image_size=(64, 32), seed=1)
    torch.manual_seed(0)
    model = create_model("stgcn", num_classes=data.num_train_pids, backbone="resnet18",
                         seq_len=2).double().eval()
    bench = _load("branches")
    q, g = (bench.frame_branch_features(model, data, ts, 2, 64, 32, without_global=True)
            for ts in (data.query, data.gallery))
    assert set(q) == {"temporal", "spatial", "global", "embedding", "without-global"}
    torch.testing.assert_close(q["without-global"], torch.cat([q["temporal"], q["spatial"]], 1))
    want = evaluate(model, data, 2, 64, 32, metric="euclidean", progress=False)
    got = rank_features(q["embedding"], g["embedding"], data.query, data.gallery,
                        metric="euclidean")
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-9)
    # the global block of query tracklet 0: its clips' global post-BNNeck features, averaged
    clips = TestClipDataset(data, data.query[:1], 2, 64, 32)
    batch = torch.stack([clips[j]["clip"] for j in range(len(clips))]).double()
    with torch.no_grad():
        out = model(batch)
        i = list(out["branches"]).index("global")
        want_global = model.necks[i](out["features"][i])[0].mean(dim=0)
    torch.testing.assert_close(q["global"][0], want_global)


def test_inference_quick(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                        "(pip install 'stgraph[export]')")
    out = tmp_path / "inference.json"
    res = _load("inference").main(["--quick", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["backend"] for r in saved["rows"]] == ["eager", "onnxruntime"]
    eager, ort = res["rows"]
    assert eager["tracklets"] == ort["tracklets"] == 6  # 3 test ids x 2 cameras
    assert eager["clips"] == ort["clips"] >= eager["tracklets"]
    for r in res["rows"]:
        assert r["tracklets_per_s"] == pytest.approx(r["tracklets"] / r["seconds"])
    assert 0 <= ort["max_abs_diff"] < 1e-4
    assert "max |onnx - eager|" in capsys.readouterr().out


def test_gpu_script_quick_runs_every_step_on_the_cpu(tmp_path):
    """``bash benchmarks/gpu.sh --quick``: the GPU script's steps (kernel tests, the three
    --device benchmarks, the three fine-tunes, the JSON summary) as a CPU smoke test."""
    import subprocess

    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "--quick"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in ("kernel tests", "layers.py --device cpu", "models.py --device cpu",
                 "profile_heads.py --device cpu", "fine-tune tp", "fine-tune stgcn",
                 "fine-tune ctl", "done: JSON in"):
        assert step in out, step
    assert out.count("rank-1") >= 3 and "s/epoch" in out


def test_branch_gradients_add_up_to_the_training_loss_gradient(tmp_path):
    """The branches' gradients into the tail's maps sum to the gradient of ReIDLoss (the
    loss the run trains), and the global branch's is the reference (ratio 1, cosine 1)."""
    import torch

    from stgraph.cache import (
        FeatureCache,
        FeatureMapHead,
        build_feature_cache,
        cache_settings,
        make_cached_train_loader,
    )
    from stgraph.data import SyntheticReID
    from stgraph.losses import ReIDLoss
    from stgraph.models import create_model

    data = SyntheticReID(num_train_ids=16, num_test_ids=2, min_frames=2, max_frames=4,
                         image_size=(64, 32), seed=1)
    torch.manual_seed(0)
    # the paper's joint training (graph_grad_scale 1, as main() measures every model): the
    # graph branches' gradients reach the backbone, so ReIDLoss's is the sum of all three
    model = create_model("stgcn", num_classes=16, backbone="resnet18", seq_len=4,
                         num_patches=2, graph_grad_scale=1.0)
    settings = cache_settings({"name": "synthetic"}, "resnet18", None, 1, 64, 32, cut="layer4")
    build_feature_cache(data, model.backbone, tmp_path / "c", settings, progress=False)
    cache = FeatureCache(tmp_path / "c")
    head = FeatureMapHead(model.double(), cache.image_size, cache.cut).train()
    bench = _load("branch_gradients")
    batch = next(iter(make_cached_train_loader(cache, 4, 16, 2)))
    torch.manual_seed(1)
    grads = bench.branch_gradients(head, batch, 16)
    assert set(grads) == {"temporal", "spatial", "global"}
    B, T = batch["clip"].shape[:2]
    tail = model.backbone.forward_from(batch["clip"].double().flatten(0, 1), cache.cut)
    tail = tail.reshape(B, T, *tail.shape[1:]).detach().requires_grad_()
    torch.manual_seed(1)
    total, _ = ReIDLoss(16)(model.forward_head(tail), batch["pid"])
    (want,) = torch.autograd.grad(total, tail)
    torch.testing.assert_close(sum(grads.values()), want, atol=1e-10, rtol=1e-8)
    rows = bench.measure(head, cache, 16, batches=1, seed=0)
    assert rows["global"]["ratio"] == pytest.approx(1.0)
    assert rows["global"]["cosine"] == pytest.approx(1.0)
    assert all(r["norm"] > 0 for r in rows.values())


def test_plot_curves_reads_the_evaluated_epochs(tmp_path):
    run = tmp_path / "finetune" / "tp" / "seed0"
    run.mkdir(parents=True)
    lines = [{"epoch": 1, "acc": 0.1, "loss": 3.0}, {"epoch": 2, "acc": 0.5, "loss": 2.0,
                                                     "rank1": 0.25, "mAP": 0.4}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    out = tmp_path / "curves.png"
    data = _load("plot_curves").main([str(run), "--out", str(out), "--reference", "7"])
    assert out.read_bytes()[:4] == b"\x89PNG"
    c = data["curves"]["tp"]
    assert c["eval_epoch"] == [2] and c["rank1"] == [25.0] and c["acc"] == [10.0, 50.0]
    assert json.loads(out.with_suffix(".json").read_text())["reference"] == 7.0
    with pytest.raises(FileNotFoundError, match="log.jsonl: not found"):
        _load("plot_curves").main([str(tmp_path), "--out", str(out)])
    if "matplotlib.pyplot" in sys.modules:  # the figure is not pyplot's: none is left open
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_last_clip_ways_match_the_library_and_weighting_gives_the_frame_mean():
    """benchmarks/last_clip.py: its "pad" and "overlap" features are what the library's
    evaluation ranks; weighting TP's padded clips by their distinct frames gives the mean
    over every frame (the features at seq_len 1) when the padded clip is one frame
    repeated (length = 1 mod 3), and not when it holds two (the repeated one counts twice)."""
    import torch

    from stgraph.data import SyntheticReID
    from stgraph.eval import evaluate, rank_features
    from stgraph.models import create_model

    data = SyntheticReID(num_train_ids=4, num_test_ids=6, min_frames=3, max_frames=7,
                         image_size=(64, 32), seed=2)
    assert {len(t.frames) % 3 for t in data.query} > {0}  # some last clips differ
    torch.manual_seed(0)
    bench = _load("last_clip")
    for name in ("tp", "stgcn"):
        kw = {"seq_len": 3} if name == "stgcn" else {}
        model = create_model(name, num_classes=data.num_train_pids, backbone="resnet18",
                             **kw).double().eval()
        for last_clip in ("pad", "overlap"):
            q, g = (bench.tracklet_features(model, data, ts, 3, 64, 32, last_clip, False)
                    for ts in (data.query, data.gallery))
            got = rank_features(q, g, data.query, data.gallery)
            want = evaluate(model, data, 3, 64, 32, progress=False, last_clip=last_clip)
            assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-6), (name, last_clip)
    tp = create_model("tp", num_classes=data.num_train_pids, backbone="resnet18").double()
    tp.eval()
    weighted = bench.tracklet_features(tp, data, data.query, 3, 64, 32, "pad", True)
    frame_mean = bench.tracklet_features(tp, data, data.query, 1, 64, 32, "pad", False)
    padded = bench.tracklet_features(tp, data, data.query, 3, 64, 32, "pad", False)
    lengths = [len(t.frames) for t in data.query]
    assert {n % 3 for n in lengths} == {0, 1, 2}
    for n, length in enumerate(lengths):
        exact = length % 3 in (0, 1)
        assert torch.allclose(weighted[n], frame_mean[n], atol=1e-5) == exact, length
        assert torch.allclose(padded[n], frame_mean[n], atol=1e-5) == (length % 3 == 0), length
