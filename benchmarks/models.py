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
* Step: ``model.train()``, ``ReIDLoss`` (cross-entropy + batch-hard triplet per branch,
  plus CTL's diversity loss) on ``model(clips)``, ``backward()``; no optimiser step.
  Backbone alone: ``model.forward_features(clips).sum().backward()``. The two are timed
  round-robin (``_timer.compare``), so that a drift of the machine's load falls on both;
  head share = (step - backbone) / backbone.
* Batch: the papers train on B = 32 clips (8 identities x 4); a ResNet-50 step on 32
  clips of 8 frames at 256 x 128 takes minutes on 2 CPU cores, so the default is B = 2
  clips (``--batch``). Backbone and head both grow linearly with B, so the head share
  hardly depends on it.

Usage (from the repository root)::

    python benchmarks/models.py [--out benchmarks/results/models.json]
    python benchmarks/models.py --quick   # resnet18, 64 x 32 frames, B = 2: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import compare  # noqa: E402

from stgraph.losses import ReIDLoss  # noqa: E402
from stgraph.models import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 625  # MARS training identities
SEQ_LEN = {"tp": 8, "stgcn": 8, "ctl": 6}  # STGCN (CVPR 2020) T = 8, CTL (CVPR 2021) T = 6
TARGET_HEAD_SHARE = 0.05  # issue 5: STGCN's head <= 5 % of the backbone's fwd+bwd time


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_model(name: str, args, device: torch.device, sync) -> dict[str, Any]:
    seq_len = args.seq_len or SEQ_LEN[name]
    kwargs: dict[str, Any] = {"backbone": args.backbone}
    if name == "stgcn":
        kwargs["seq_len"] = seq_len
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, **kwargs).to(device).train()
    criterion = ReIDLoss(NUM_CLASSES).to(device)
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(args.batch, seq_len, 3, args.height, args.width, generator=gen)
    clips = clips.to(device)
    pids = (torch.arange(args.batch) // 2).to(device)  # pairs of clips per identity

    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = criterion(model(clips), pids)
        loss.backward()

    def backbone():
        model.zero_grad(set_to_none=True)
        model.forward_features(clips).sum().backward()

    times = compare({"step": step, "backbone": backbone}, repeats=args.repeats,
                    warmup=args.warmup, sync=sync)
    t_step, t_backbone = times["step"]["median_s"], times["backbone"]["median_s"]
    total, body = _params(model), _params(model.backbone)
    return {
        "model": name, "seq_len": seq_len, "batch": args.batch,
        "params": total, "backbone_params": body, "head_params": total - body,
        "step_s": t_step, "clips_per_s": args.batch / t_step, "backbone_s": t_backbone,
        "head_share": (t_step - t_backbone) / t_backbone,
        "step": times["step"], "backbone": times["backbone"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/models.json")
    parser.add_argument("--models", nargs="+", choices=tuple(SEQ_LEN), default=list(SEQ_LEN))
    parser.add_argument("--backbone", default=None, help="resnet50 (quick: resnet18)")
    parser.add_argument("--batch", type=int, default=2, help="clips per step (default 2)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="frames per clip for every model (default: 8 TP/STGCN, 6 CTL)")
    parser.add_argument("--height", type=int, default=None, help="256 (quick: 64)")
    parser.add_argument("--width", type=int, default=None, help="128 (quick: 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="resnet18, 64 x 32 frames, B = 2: a smoke test")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here")
    if args.batch < 2:
        parser.error("--batch must be >= 2 (the BNNecks' batch norm needs 2 clips)")
    args.backbone = args.backbone or ("resnet18" if args.quick else "resnet50")
    args.height = args.height or (64 if args.quick else 256)
    args.width = args.width or (32 if args.quick else 128)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    results: dict[str, Any] = {
        "quick": args.quick, "backbone": args.backbone, "batch": args.batch,
        "height": args.height, "width": args.width, "device": str(device),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
        "num_classes": NUM_CLASSES, "torch": torch.__version__,
        "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "models": [],
    }
    print_header(results)
    for name in args.models:
        res = run_model(name, args, device, sync)
        print_row(res)
        results["models"].append(res)
    results["load_average_end"] = os.getloadavg()
    stgcn = next((r for r in results["models"] if r["model"] == "stgcn"), None)
    results["target"] = {
        "stgcn_head_share_max": TARGET_HEAD_SHARE,
        "stgcn_head_share": stgcn["head_share"] if stgcn else None,
        "met": stgcn["head_share"] <= TARGET_HEAD_SHARE if stgcn else None,
    }
    print_target(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return results


HEAD = (f"{'model':<7}{'T':>3}{'params M':>10}{'head M':>8}{'step s':>9}{'clips/s':>9}"
        f"{'backbone s':>12}{'head share':>12}")


def print_header(res: dict[str, Any]) -> None:
    print(f"training step (forward + backward, no optimiser) of {res['batch']} clips at "
          f"{res['height']} x {res['width']}, {res['backbone']}; torch {res['torch']}, "
          f"{res['threads']} threads, device {res['device']}"
          + (f" ({res['gpu']})" if res["gpu"] else "")
          + f"; median of {res['repeats']} (warm-up {res['warmup']}, step and backbone "
          f"alternating); load average {res['load_average_start'][0]:.2f}")
    print(HEAD + "\n" + "-" * len(HEAD))


def print_row(r: dict[str, Any]) -> None:
    print(f"{r['model']:<7}{r['seq_len']:>3}{r['params'] / 1e6:>10.1f}"
          f"{r['head_params'] / 1e6:>8.1f}{r['step_s']:>9.3f}{r['clips_per_s']:>9.2f}"
          f"{r['backbone_s']:>12.3f}{100 * r['head_share']:>11.1f}%")


def print_target(res: dict[str, Any]) -> None:
    t = res["target"]
    if t["stgcn_head_share"] is None:
        print("\ntarget (issue 5): STGCN head <= 5 % of the backbone: not measured")
        return
    verdict = "met" if t["met"] else "not met"
    print(f"\ntarget (issue 5): STGCN head <= {100 * t['stgcn_head_share_max']:.0f} % of the "
          f"backbone's forward+backward: {100 * t['stgcn_head_share']:.1f} % ({verdict})")
    if res["quick"]:
        print("  (quick sizes: not the paper's, the share says nothing about the target)")


if __name__ == "__main__":
    main()
