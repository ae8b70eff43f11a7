"""Training throughput of the video re-ID models and the share of their graph heads.

How many clips per second does a training step (forward + backward) of TP, STGCN and CTL
process, and what does each head add to its backbone? The issue 5 target: STGCN's head
adds no more than 5 % to the backbone's forward+backward time.

* Models: ``stgraph.models.create_model(name, 625, backbone=...)`` (625 = MARS's training
  identities), defaults otherwise: last stride 1, STGCN with P = 4 patches and M = 2
  layers per branch, CTL with 2 3D-GCLs per scale, tau = 3, CS-GCL s1/s2 -> s3 and the
  prior pose (no keypoints given).
* Clips: random ``(B, T, 3, H, W)``, 256 x 128 frames, T = 8 for TP and STGCN and T = 6
  for CTL (the papers'; ``--seq-len`` sets one T for all).
* Three functions, timed round-robin with ``_timer.compare`` so that a drift of the machine's
  load falls on all alike (``model.train()``, no optimiser step):

  - step: ``ReIDLoss`` (cross-entropy + batch-hard triplet per branch, plus CTL's diversity
    loss) on ``model(clips)``, ``backward()``;
  - backbone: ``model.forward_features(clips).backward(g)`` with a fixed dense random
    gradient ``g`` of the feature maps' shape, as the head hands back in a step;
  - head: everything after the backbone (CTL's prior-pose heatmaps, the graph layers,
    pooling, BNNecks, classifiers, losses) forward and backward, on the backbone's feature
    maps detached and requiring grad, so the backward runs into them and stops there.

  Head share = head / backbone, the issue's measure. ``step - backbone`` counts the same
  work but is the difference of two numbers twenty times larger than the head, so the
  machine's noise swamps it; it is printed as a check.
* Batch: the papers train on B = 32 clips (8 identities x 4); a ResNet-50 step on 32
  clips of 8 frames at 256 x 128 takes minutes on 2 CPU cores, so the default is B = 2
  clips (``--batch``). The head's share falls as B grows: its 2048 x 2048 products have
  B x 32 rows and run faster per row on more rows (STGCN: 3.9 % at B = 2, 2.4 % at 4).

Usage (from the repository root)::

    python benchmarks/models.py [--out benchmarks/results/models.json]
    python benchmarks/models.py --quick   # resnet18, 64 x 32 frames, B = 2: a smoke test
    python benchmarks/models.py --device cuda --amp   # each row also with --amp

``--amp`` times every model (and backend) a second time with the forward passes in
``stgraph train --amp``'s autocast (:func:`stgraph.engine.mixed_precision`: bfloat16 on
the CPU and on GPUs that support it, float16 on older GPUs; the losses in float32), and
prints clips/s without and with it. The gradient scaler of float16 is left out (a
multiplication of the loss; the optimiser step is not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import compare, machine, save_results  # noqa: E402

from stgraph.engine import mixed_precision  # noqa: E402
from stgraph.losses import ReIDLoss  # noqa: E402
from stgraph.models import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 625  # MARS training identities
SEQ_LEN = {"tp": 8, "stgcn": 8, "ctl": 6}  # STGCN (CVPR 2020) T = 8, CTL (CVPR 2021) T = 6
TARGET_HEAD_SHARE = 0.05  # issue 5: STGCN's head <= 5 % of the backbone's fwd+bwd time
TARGET_TRITON_SPEEDUP = 1.5  # issue 5: on a GPU, the Triton head >= 1.5x the eager one
GRAPH_MODELS = ("stgcn", "ctl")  # the models whose graph layers take a backend


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def training_steps(name: str, backbone: str, batch: int, seq_len: int, height: int,
                   width: int, device: torch.device,
                   backend: str | None = None,
                   amp: bool = False) -> tuple[torch.nn.Module, dict]:
    """The model ``name`` and its three timed functions ``{"step", "backbone", "head"}``
    (see the module docstring), on random clips ``(batch, seq_len, 3, height, width)``;
    ``backend`` is the graph layers' (STGCN and CTL; :obj:`None`: the model's default);
    ``amp``: the forward passes in ``--amp``'s autocast."""
    autocast = mixed_precision(device)[0] if amp else contextlib.nullcontext
    kwargs: dict[str, Any] = {"backbone": backbone}
    if name == "stgcn":
        kwargs["seq_len"] = seq_len
    if backend is not None and name in GRAPH_MODELS:
        kwargs["backend"] = backend
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, **kwargs).to(device).train()
    criterion = ReIDLoss(NUM_CLASSES).to(device)
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(batch, seq_len, 3, height, width, generator=gen).to(device)
    pids = (torch.arange(batch) // 2).to(device)  # pairs of clips per identity

    with torch.no_grad():
        maps = model.forward_features(clips)
    grad_maps = torch.randn(maps.shape, generator=gen).to(device)
    maps = maps.detach().requires_grad_()
    image_size = tuple(clips.shape[-2:])

    def head_forward(feature_maps):
        if name == "ctl":  # CTL's forward draws the heatmaps on the feature grid
            B, T = feature_maps.shape[:2]
            heatmaps = model.heatmaps(None, B, T, image_size, tuple(feature_maps.shape[-2:]),
                                      feature_maps.device, feature_maps.dtype)
            return model.forward_head(feature_maps, heatmaps)
        return model.forward_head(feature_maps)

    def step():
        model.zero_grad(set_to_none=True)
        with autocast():
            outputs = model(clips)
        loss, _ = criterion(outputs, pids)
        loss.backward()

    def backbone_step():
        model.zero_grad(set_to_none=True)
        with autocast():
            out = model.forward_features(clips)
        out.backward(grad_maps.to(out.dtype))

    def head():
        model.zero_grad(set_to_none=True)
        maps.grad = None
        with autocast():
            outputs = head_forward(maps)
        loss, _ = criterion(outputs, pids)
        loss.backward()

    return model, {"step": step, "backbone": backbone_step, "head": head}


def run_model(name: str, backend: str | None, args, device: torch.device,
              sync, amp: bool = False) -> dict[str, Any]:
    seq_len = args.seq_len or SEQ_LEN[name]
    model, fns = training_steps(name, args.backbone, args.batch, seq_len, args.height,
                                args.width, device, backend, amp=amp)
    times = compare(fns, repeats=args.repeats, warmup=args.warmup, sync=sync)
    t_step, t_backbone = times["step"]["median_s"], times["backbone"]["median_s"]
    t_head = times["head"]["median_s"]
    total, body = _params(model), _params(model.backbone)
    return {
        "model": name, "backend": backend, "amp": amp, "seq_len": seq_len,
        "batch": args.batch,
        "params": total, "backbone_params": body, "head_params": total - body,
        "step_s": t_step, "clips_per_s": args.batch / t_step, "backbone_s": t_backbone,
        "head_s": t_head, "head_share": t_head / t_backbone,
        "step_minus_backbone_share": (t_step - t_backbone) / t_backbone,
        "step": times["step"], "backbone": times["backbone"], "head": times["head"],
    }


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``models.py`` and ``profile_heads.py`` share: models, sizes, timing."""
    parser.add_argument("--models", nargs="+", choices=tuple(SEQ_LEN), default=list(SEQ_LEN))
    parser.add_argument("--backbone", default=None, help="resnet50 (quick: resnet18)")
    parser.add_argument("--batch", type=int, default=2, help="clips per step (default 2)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="frames per clip for every model (default: 8 TP/STGCN, 6 CTL)")
    parser.add_argument("--height", type=int, default=None, help="256 (quick: 64)")
    parser.add_argument("--width", type=int, default=None, help="128 (quick: 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="resnet18, 64 x 32 frames, B = 2: a smoke test")


def setup_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Check the shared options (``parser.error`` on bad ones), fill in the defaults, set
    the threads; return the run's description for the JSON (sizes, machine, versions)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here")
    if args.batch < 2:
        parser.error("--batch must be >= 2 (the BNNecks' batch norm needs 2 clips)")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    args.backbone = args.backbone or ("resnet18" if args.quick else "resnet50")
    args.height = args.height or (64 if args.quick else 256)
    args.width = args.width or (32 if args.quick else 128)
    torch.set_num_threads(args.threads)
    return {
        "quick": args.quick, "backbone": args.backbone, "batch": args.batch,
        "height": args.height, "width": args.width, "device": args.device,
        "repeats": args.repeats, "warmup": args.warmup, "num_classes": NUM_CLASSES,
        **machine(), "models": [],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/models.json")
    add_model_arguments(parser)
    parser.add_argument("--backends", nargs="+", choices=("torch", "triton"), default=None,
                        help="graph-layer backends of STGCN and CTL, one row each "
                             "(default: torch on cpu, torch and triton on cuda)")
    parser.add_argument("--amp", action="store_true",
                        help="time every row also with stgraph train --amp's autocast and "
                             "report clips/s without and with it")
    args = parser.parse_args(argv)
    results = setup_run(parser, args)
    if args.backends is None:
        args.backends = ["torch", "triton"] if args.device == "cuda" else ["torch"]
    if ("triton" in args.backends and args.device != "cuda"
            and os.environ.get("TRITON_INTERPRET") != "1"):
        parser.error("--backends triton needs --device cuda (the kernels compile for GPUs), "
                     "or TRITON_INTERPRET=1 to run them slowly on the CPU as a smoke test")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print_header(results)
    for name in args.models:
        for backend in (args.backends if name in GRAPH_MODELS else [None]):
            for amp in ((False, True) if args.amp else (False,)):
                res = run_model(name, backend, args, device, sync, amp=amp)
                print_row(res)
                results["models"].append(res)
    if args.amp:
        results["amp_speedup"] = amp_summary(results["models"])
        print_amp(results)
    results["target"] = target_summary(results["models"])
    print_target(results)
    save_results(args.out, results)
    return results


def amp_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Clips/s without and with ``--amp`` per model (and backend) and their ratio."""
    out = {}
    for r in rows:
        if r.get("amp"):
            base = next(b for b in rows if b["model"] == r["model"]
                        and b["backend"] == r["backend"] and not b.get("amp"))
            label = r["model"] + (f" ({r['backend']})" if r["backend"] else "")
            out[label] = {"fp32_clips_per_s": base["clips_per_s"],
                          "amp_clips_per_s": r["clips_per_s"],
                          "speedup": r["clips_per_s"] / base["clips_per_s"]}
    return out


def print_amp(res: dict[str, Any]) -> None:
    print("\n--amp (training step clips/s): " + "; ".join(
        f"{k} {v['fp32_clips_per_s']:.2f} -> {v['amp_clips_per_s']:.2f} "
        f"({v['speedup']:.2f}x)" for k, v in res["amp_speedup"].items()))


def target_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue 5 targets: STGCN's head share (its fastest backend, as ``"auto"`` picks
    Triton where it runs) and, on a GPU, the Triton head's speed-up over the torch one."""
    rows = [r for r in rows if not r.get("amp")]  # the targets are fp32's
    stgcn = {r["backend"]: r for r in rows if r["model"] == "stgcn"}
    best = min(stgcn.values(), key=lambda r: r["head_s"]) if stgcn else None
    out: dict[str, Any] = {
        "stgcn_head_share_max": TARGET_HEAD_SHARE,
        "stgcn_head_share": best["head_share"] if best else None,
        "stgcn_head_backend": best["backend"] if best else None,
        "met": best["head_share"] <= TARGET_HEAD_SHARE if best else None,
        "triton_speedup_min": TARGET_TRITON_SPEEDUP, "triton_speedup": {},
    }
    for name in GRAPH_MODELS:
        by = {r["backend"]: r for r in rows if r["model"] == name}
        if "torch" in by and "triton" in by:
            out["triton_speedup"][name] = by["torch"]["head_s"] / by["triton"]["head_s"]
    return out


HEAD = (f"{'model':<14}{'T':>3}{'params M':>10}{'head M':>8}{'step s':>9}{'clips/s':>9}"
        f"{'backbone s':>12}{'head s':>9}{'head share':>12}{'step-backbone':>15}")


def print_header(res: dict[str, Any]) -> None:
    print(f"training step (forward + backward, no optimiser) of {res['batch']} clips at "
          f"{res['height']} x {res['width']}, {res['backbone']}; torch {res['torch']}, "
          f"{res['threads']} threads, device {res['device']}"
          + (f" ({res['gpu']})" if res["gpu"] else "")
          + f"; median of {res['repeats']} (warm-up {res['warmup']}; step, backbone and head "
          f"alternating); load average {res['load_average_start'][0]:.2f}")
    print(HEAD + "\n" + "-" * len(HEAD))


def print_row(r: dict[str, Any]) -> None:
    label = r["model"] + (f" ({r['backend']})" if r["backend"] else "") + (
        " amp" if r.get("amp") else "")
    print(f"{label:<14}{r['seq_len']:>3}{r['params'] / 1e6:>10.1f}"
          f"{r['head_params'] / 1e6:>8.1f}{r['step_s']:>9.3f}{r['clips_per_s']:>9.2f}"
          f"{r['backbone_s']:>12.3f}{r['head_s']:>9.3f}{100 * r['head_share']:>11.1f}%"
          f"{100 * r['step_minus_backbone_share']:>14.1f}%")


def print_target(res: dict[str, Any]) -> None:
    t = res["target"]
    if t["stgcn_head_share"] is None:
        print("\ntarget (issue 5): STGCN head <= 5 % of the backbone: not measured")
    else:
        verdict = "met" if t["met"] else "not met"
        print(f"\ntarget (issue 5): STGCN head <= {100 * t['stgcn_head_share_max']:.0f} % of "
              f"the backbone's forward+backward: {100 * t['stgcn_head_share']:.1f} % with "
              f"backend {t['stgcn_head_backend']} ({verdict})")
    speedups = t["triton_speedup"]
    if not speedups:
        print(f"target (issue 5): Triton head >= {t['triton_speedup_min']}x the torch head on "
              "a GPU: not measured" + ("" if res["device"] == "cuda" else " (no GPU run)"))
    for name, x in speedups.items():
        verdict = "met" if x >= t["triton_speedup_min"] else "not met"
        print(f"target (issue 5): {name} head, torch / triton time = {x:.2f}x ({verdict}, "
              f">= {t['triton_speedup_min']}x)")
    if res["quick"]:
        print("  (quick sizes: not the paper's, the figures say nothing about the targets)")


if __name__ == "__main__":
    main()
