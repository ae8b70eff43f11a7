"""Where does a graph head's time go? FLOPs, time and the operators that take it.

For each model (TP, STGCN, CTL at the sizes of ``models.py``): the FLOPs of the backbone's
and the head's forward+backward (``torch.utils.flop_counter.FlopCounterMode``, matrix
products and convolutions), their times (``_timer.compare``, round-robin), the rate each
achieves, and the head's operators ranked by their own time (``torch.profiler``, grouped
by operator and input shapes). The question behind it, from issue 5: is a head slow
because it does much arithmetic (a high FLOP share, computed at the backbone's rate), or
because of work a fused kernel would remove (elementwise passes, copies, launches)?

* Backbone and head are the ``backbone`` and ``head`` functions of ``models.py``
  (``training_steps``): the backbone's forward and backward with a dense output gradient,
  and everything after the backbone (graph layers, pooling, BNNecks, losses) forward and
  backward on detached feature maps.
* Operators: self time of each ``aten`` operator (CPU time on the CPU, device time with
  ``--device cuda``) summed over ``--profile-calls`` head calls, per call. "matmul" sums
  ``mm``, ``bmm``, ``addmm``, ``baddbmm``; the rest are the elementwise, reduction and
  copy passes that fused kernels target.

Usage (from the repository root)::

    python benchmarks/profile_heads.py [--out benchmarks/results/profile_heads.json]
    python benchmarks/profile_heads.py --quick   # resnet18, 64 x 32 frames: a smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import compare, save_results  # noqa: E402
from models import SEQ_LEN, add_model_arguments, setup_run, training_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (multiply and add counted apart)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def operator_table(fn, calls: int, device: torch.device, top: int) -> dict[str, Any]:
    """Profile ``calls`` calls of ``fn``; the ``top`` operators by self time per call."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = [e for e in prof.key_averages(group_by_input_shape=True)
            if e.key.startswith("aten::") and getattr(e, attr) > 0]
    total_us = sum(getattr(e, attr) for e in rows)
    matmul_us = sum(getattr(e, attr) for e in rows if e.key in MATMUL_OPS)
    rows.sort(key=lambda e: getattr(e, attr), reverse=True)
    return {
        "clock": "device" if device.type == "cuda" else "cpu",
        "total_ms": total_us / 1e3 / calls,
        "matmul_share": matmul_us / total_us if total_us else 0.0,
        "top": [{
            "op": e.key, "shapes": str(e.input_shapes), "calls": e.count / calls,
            "ms": getattr(e, attr) / 1e3 / calls, "share": getattr(e, attr) / total_us,
        } for e in rows[:top]],
    }


def run_model(name: str, args, device: torch.device, sync) -> dict[str, Any]:
    seq_len = args.seq_len or SEQ_LEN[name]
    _, fns = training_steps(name, args.backbone, args.batch, seq_len, args.height,
                            args.width, device, args.backend)
    fns = {"backbone": fns["backbone"], "head": fns["head"]}
    flops = {key: count_flops(fn) for key, fn in fns.items()}
    times = compare(fns, repeats=args.repeats, warmup=args.warmup, sync=sync)
    t = {key: times[key]["median_s"] for key in fns}
    return {
        "model": name, "backend": args.backend, "seq_len": seq_len, "batch": args.batch,
        "backbone_gflop": flops["backbone"] / 1e9, "head_gflop": flops["head"] / 1e9,
        "flop_share": flops["head"] / flops["backbone"],
        "backbone_s": t["backbone"], "head_s": t["head"],
        "time_share": t["head"] / t["backbone"],
        "backbone_gflops": flops["backbone"] / 1e9 / t["backbone"],
        "head_gflops": flops["head"] / 1e9 / t["head"],
        "operators": operator_table(fns["head"], args.profile_calls, device, args.top),
        "times": times,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/profile_heads.json")
    add_model_arguments(parser)
    parser.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto",
                        help="graph-layer backend of STGCN and CTL (default auto: Triton on "
                             "cuda, torch on cpu)")
    parser.add_argument("--profile-calls", type=int, default=5,
                        help="head calls under the profiler (default 5)")
    parser.add_argument("--top", type=int, default=8, help="operators listed per model")
    args = parser.parse_args(argv)
    results = setup_run(parser, args)
    if args.profile_calls < 1 or args.top < 1:
        parser.error("--profile-calls and --top must be >= 1")
    results.update(backend=args.backend, profile_calls=args.profile_calls)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print(f"head vs backbone, forward + backward of {args.batch} clips at {args.height} x "
          f"{args.width}, {args.backbone}, graph backend {args.backend}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({results['gpu']})" if results["gpu"] else "")
          + f"; median of {args.repeats}; load average {results['load_average_start'][0]:.2f}")
    print(HEAD + "\n" + "-" * len(HEAD))
    for name in args.models:
        res = run_model(name, args, device, sync)
        results["models"].append(res)
        print_row(res)
    for res in results["models"]:
        print_operators(res)
    save_results(args.out, results)
    return results


HEAD = (f"{'model':<7}{'backbone GFLOP':>16}{'head GFLOP':>12}{'FLOP share':>12}"
        f"{'backbone s':>12}{'head s':>9}{'time share':>12}{'backbone GFLOP/s':>18}"
        f"{'head GFLOP/s':>14}")


def print_row(r: dict[str, Any]) -> None:
    print(f"{r['model']:<7}{r['backbone_gflop']:>16.1f}{r['head_gflop']:>12.2f}"
          f"{100 * r['flop_share']:>11.2f}%{r['backbone_s']:>12.3f}{r['head_s']:>9.3f}"
          f"{100 * r['time_share']:>11.2f}%{r['backbone_gflops']:>18.1f}"
          f"{r['head_gflops']:>14.1f}")


def print_operators(r: dict[str, Any]) -> None:
    ops = r["operators"]
    print(f"\n{r['model']} head: {ops['total_ms']:.1f} ms of {ops['clock']} time in aten "
          f"operators per forward+backward, {100 * ops['matmul_share']:.1f} % in matmul")
    print(f"  {'operator':<28}{'calls':>6}{'ms':>9}{'share':>8}  input shapes")
    for row in ops["top"]:
        print(f"  {row['op']:<28}{row['calls']:>6.0f}{row['ms']:>9.2f}"
              f"{100 * row['share']:>7.1f}%  {row['shapes'][:70]}")


if __name__ == "__main__":
    main()
