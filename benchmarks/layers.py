"""Graph layers at the paper sizes: dense twin vs PyG sparse path, forward and forward+backward.

Which is faster for the small, dense graphs of STGCN and CTL, and by how much: the batched
dense layers (``DenseAffinityGCN``, ``DenseSlidingWindowGCN``, ``DenseCrossScaleGCN``) or
their PyG ``MessagePassing`` twins (``AffinityGCNConv``, ``SlidingWindowGCN``,
``CrossScaleGCN``)? The issue 5 target: the dense affinity GCN at least 5x faster than the
PyG sparse one at the paper size on 2 CPU cores. ``torch_geometric.nn.GCNConv`` on the
same graphs is a reference (a fixed-weight GCN with the same 2048 x 2048 linear).

Sizes (the papers'):

* STGCN (Yang et al., CVPR 2020): B = 32 clips of T = 8 frames x P = 4 patches, N = 32
  nodes per clip on the complete graph with self-loops, C = 2048 -> 2048 (temporal
  branch); the spatial branch is B*T = 256 graphs of P = 4 nodes, 2048 -> 256.
* CTL (Liu et al., CVPR 2021): B = 32 clips of T = 6 frames, 17 / 10 / 5 nodes
  (COCO keypoints, scales s1 / s2 / s3), tau = 3, C = 2048: the 3D-GCL per scale and the
  CS-GCL s1 -> s3 and s2 -> s3.

Each layer is timed with the shared timer (``_timer.measure``: warm-up, device sync,
median of ``--repeats``): forward under ``torch.no_grad()``, and forward + backward (a
fixed random output gradient, gradients of the parameters and of the input node features;
they are cleared before each call). The sparse twin gets the dense twin's weights and
its output is compared with the dense one. Its edge index / batch vectors are built once,
outside the timed function. A sparse layer whose estimated peak memory
(``E x C`` float32 message tensors) exceeds ``--max-sparse-gb`` runs on the largest number
of clips that fits, and its times are scaled linearly to the full batch (marked ``*``).

Triton (``backend="triton"`` of the dense layers) is measured only with ``--device cuda``
on a machine with a GPU and when the layer accepts a ``backend`` argument; otherwise the
row says why it was not measured.

Usage (from the repository root)::

    python benchmarks/layers.py [--out benchmarks/results/layers.json]
    python benchmarks/layers.py --quick   # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_geometric
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, measure, save_results  # noqa: E402

from stgraph.graph import COCO17, PatchGraphBuilder  # noqa: E402
from stgraph.nn import (  # noqa: E402
    AffinityGCNConv,
    CrossScaleGCN,
    DenseAffinityGCN,
    DenseCrossScaleGCN,
    DenseSlidingWindowGCN,
    SlidingWindowGCN,
)

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 5.0  # issue 5: dense affinity GCN >= 5x faster than the PyG sparse one
PAPER = {"B": 32, "T": 8, "P": 4, "C": 2048, "C_s": 256, "T_ctl": 6, "tau": 3}
QUICK = {"B": 2, "T": 4, "P": 4, "C": 64, "C_s": 16, "T_ctl": 3, "tau": 3}


# ------------------------------------------------------------------------ helpers


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _backend_argument(cls: type) -> str | None:
    """Where a dense layer takes ``backend=``: ``"init"``, ``"forward"`` or None."""
    if "backend" in inspect.signature(cls).parameters:
        return "init"
    if "backend" in inspect.signature(cls.forward).parameters:
        return "forward"
    return None


def _strip(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "value"}


@dataclass
class Impl:
    """One implementation of a layer on the first ``b`` clips of the case's input.

    ``setup(b)`` returns ``(module, inputs, call)``: ``call(module, *inputs)`` runs it and
    returns the output, in the layout ``dense_output(out, b)`` maps to the dense one's.
    """

    label: str
    kind: str  # "dense" | "sparse" | "reference" | "triton"
    setup: Callable[[int], tuple[nn.Module, tuple, Callable]] | None = None
    bytes_per_clip: float = 0.0  # estimated peak bytes of forward+backward per clip
    to_dense: Callable[[Tensor, int], Tensor] | None = None  # output -> dense layout
    skip: str | None = None  # reason it is not measured


@dataclass
class Case:
    group: str
    name: str
    size: str
    batch: int
    impls: list[Impl] = field(default_factory=list)
    target: bool = False  # the 5x target applies to the sparse twin here


def _call(module, *inputs):
    return module(*inputs)


def _grad_leaves(inputs: tuple) -> tuple:
    """Fresh leaves requiring grad for the float inputs, the rest as they are."""
    return tuple(t.detach().requires_grad_() if torch.is_tensor(t) and t.is_floating_point()
                 else t for t in inputs)


def time_impl(impl: Impl, batch: int, repeats: int, warmup: int, sync, max_bytes: float,
              reference: Callable[[int], Tensor] | None, device: torch.device,
              ) -> tuple[dict[str, Any], Tensor]:
    """Forward and forward+backward of ``impl``, and its forward output; ``reference(b)``
    is the dense layer's output on the same first ``b`` clips."""
    est = impl.bytes_per_clip * batch
    b = batch if est <= max_bytes or impl.kind == "dense" else max(
        1, int(batch * max_bytes / est))
    module, inputs, call = impl.setup(b)
    module.train()
    with torch.no_grad():
        fwd = measure(lambda: call(module, *inputs), repeats=repeats, warmup=warmup, sync=sync)
    out = fwd.pop("value")
    leaves = _grad_leaves(inputs)
    gen = torch.Generator(device=device).manual_seed(1)
    grad_out = torch.randn(out.shape, generator=gen, device=device, dtype=out.dtype)
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        for t in (*params, *leaves):
            if torch.is_tensor(t):
                t.grad = None
        call(module, *leaves).backward(grad_out)

    fb = measure(step, repeats=repeats, warmup=warmup, sync=sync)
    fb.pop("value")
    scale = batch / b
    res = {
        "label": impl.label, "kind": impl.kind, "clips_measured": b, "scale": scale,
        "estimated_peak_gb": est / 2**30,
        "forward_s": fwd["median_s"] * scale, "forward_backward_s": fb["median_s"] * scale,
        "forward": _strip(fwd), "forward_backward": _strip(fb),
    }
    if reference is not None and impl.to_dense is not None:
        dense = impl.to_dense(out, b)
        ref = reference(b)  # the same clips: batch norm statistics depend on the batch
        res["max_abs_diff"] = float((dense - ref).abs().max())
        res["max_rel_diff"] = res["max_abs_diff"] / float(ref.abs().max().clamp_min(1e-30))
    return res, out


# -------------------------------------------------------------------------- cases


def _twin(dense: nn.Module, sparse: nn.Module) -> nn.Module:
    sparse.load_state_dict(dense.state_dict())
    return sparse


def _dense_layer(cls: type, backend: str, *args, **kwargs) -> tuple[nn.Module, Callable]:
    """The dense layer on ``backend`` ("torch" / "triton") where it takes the argument."""
    where = _backend_argument(cls)
    if where == "init":
        return cls(*args, backend=backend, **kwargs), _call
    layer = cls(*args, **kwargs)
    if where == "forward":
        return layer, lambda m, *x: m(*x, backend=backend)
    return layer, _call


def _triton_impl(cls: type, label: str, device: torch.device, setup: Callable) -> Impl:
    impl = Impl(label, "triton", setup, to_dense=lambda out, b: out)
    if not torch.cuda.is_available():
        impl.skip = "not measured (no GPU)"
    elif _backend_argument(cls) is None:
        impl.skip = "not measured (the layer has no backend argument)"
    elif device.type != "cuda":
        impl.skip = "not measured (--device cpu)"
    return impl


def affinity_case(name: str, graphs_per_clip: int, nodes: int, c_in: int, c_out: int,
                  s: dict, device: torch.device, target: bool) -> Case:
    """STGCN's affinity GCN on B clips, each ``graphs_per_clip`` complete graphs of
    ``nodes`` nodes: dense, PyG sparse, GCNConv reference, Triton."""
    B, T, P = s["B"], s["T"], s["P"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B * graphs_per_clip, nodes, c_in, generator=gen).to(device)  # (G, N, C)
    torch.manual_seed(0)
    dense, dense_call = _dense_layer(DenseAffinityGCN, "torch", c_in, c_out)
    dense = dense.to(device)
    sparse = _twin(dense, AffinityGCNConv(c_in, c_out)).to(device)
    gcn = GCNConv(c_in, c_out).to(device)
    graph = "temporal" if graphs_per_clip == 1 else "spatial"
    builder = PatchGraphBuilder(P)

    def dense_setup(b):
        return dense, (x[:b * graphs_per_clip],), dense_call

    def edges(b):  # built once per measured size, outside the timed function
        xb = x[:b * graphs_per_clip].reshape(b, T * P, c_in)
        batch = builder.to_batch(xb, T, graph=graph)
        return batch.x.contiguous(), batch.edge_index

    def sparse_setup(b):
        return sparse, edges(b), _call

    def gcn_setup(b):
        return gcn, edges(b), _call

    def triton_setup(b):
        layer, call = _dense_layer(DenseAffinityGCN, "triton", c_in, c_out)
        layer.load_state_dict(dense.state_dict())
        return layer.to(device), (x[:b * graphs_per_clip],), call

    edges_per_clip = graphs_per_clip * (nodes * nodes + nodes)  # + the added self-loops
    # gathered h[src], h[dst], x_j, messages and their gradients: about 6 (E, C) tensors
    per_clip = 6 * edges_per_clip * max(c_in, c_out) * 4
    to_dense = lambda out, b: out.view(b * graphs_per_clip, nodes, -1)  # noqa: E731
    size = (f"{B} clips x {graphs_per_clip} graph{'s' if graphs_per_clip > 1 else ''} of "
            f"{nodes} nodes (complete + self-loops), {c_in} -> {c_out}")
    case = Case("STGCN", name, size, B, target=target)
    case.impls = [
        Impl("DenseAffinityGCN (torch)", "dense", dense_setup),
        Impl("AffinityGCNConv (PyG sparse)", "sparse", sparse_setup, per_clip, to_dense),
        Impl("GCNConv (PyG, reference)", "reference", gcn_setup, per_clip * 2 / 3),
        _triton_impl(DenseAffinityGCN, "DenseAffinityGCN (triton)", device, triton_setup),
    ]
    return case


def sliding_case(scale: str, s: dict, device: torch.device) -> Case:
    """CTL's 3D-GCL on one scale: dense vs PyG sparse (dense clips in, as the model)."""
    B, T, C, tau = s["B"], s["T_ctl"], s["C"], s["tau"]
    N = COCO17.num_nodes(scale)
    adj = COCO17.physical_adjacency(scale)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, N, C, generator=gen).to(device)
    torch.manual_seed(0)
    dense, dense_call = _dense_layer(DenseSlidingWindowGCN, "torch", C, C, adj, tau=tau)
    dense = dense.to(device)
    sparse = _twin(dense, SlidingWindowGCN(C, C, adj, tau=tau)).to(device)

    def triton_setup(b):
        layer, call = _dense_layer(DenseSlidingWindowGCN, "triton", C, C, adj, tau=tau)
        layer.load_state_dict(dense.state_dict())
        return layer.to(device), (x[:b],), call

    # window graphs: T windows of tau*N nodes, complete (A^m and A^c are on); x_j, the
    # messages and their gradients: about 4 (E, C) tensors
    per_clip = 4 * T * (tau * N) ** 2 * C * 4
    case = Case("CTL", f"3D-GCL {scale}",
                f"{B} clips x {T} windows of {tau} x {N} nodes, {C} -> {C}", B)
    case.impls = [
        Impl("DenseSlidingWindowGCN (torch)", "dense", lambda b: (dense, (x[:b],), dense_call)),
        Impl("SlidingWindowGCN (PyG sparse)", "sparse", lambda b: (sparse, (x[:b],), _call),
             per_clip, lambda out, b: out),
        _triton_impl(DenseSlidingWindowGCN, "DenseSlidingWindowGCN (triton)", device,
                     triton_setup),
    ]
    return case


def cross_case(fine: str, coarse: str, s: dict, device: torch.device) -> Case:
    """CTL's CS-GCL fine -> coarse: dense vs PyG sparse (node sets with batch vectors)."""
    B, T, C = s["B"], s["T_ctl"], s["C"]
    n_f, n_c = COCO17.num_nodes(fine), COCO17.num_nodes(coarse)
    gen = torch.Generator().manual_seed(0)
    x_f = torch.randn(B, T, n_f, C, generator=gen).to(device)
    x_c = torch.randn(B, T, n_c, C, generator=gen).to(device)
    torch.manual_seed(0)
    dense = DenseCrossScaleGCN(C, C).to(device)
    sparse = _twin(dense, CrossScaleGCN(C, C)).to(device)

    def sparse_setup(b):
        frames = torch.arange(b * T, device=device)
        return sparse, (x_f[:b].reshape(-1, C), x_c[:b].reshape(-1, C),
                        frames.repeat_interleave(n_f), frames.repeat_interleave(n_c)), _call

    # pair differences x_j - x_i (E, C) within each frame of both scales, the gathered
    # fine features and their gradients: about 3 (E, C) tensors
    per_clip = 3 * T * (n_f * n_f + n_c * n_c + n_f * n_c) * C * 4
    case = Case("CTL", f"CS-GCL {fine} -> {coarse}",
                f"{B} clips x {T} frames, {n_f} -> {n_c} nodes, {C} -> {C}", B)
    case.impls = [
        Impl("DenseCrossScaleGCN (torch)", "dense",
             lambda b: (dense, (x_f[:b], x_c[:b]), _call)),
        Impl("CrossScaleGCN (PyG sparse)", "sparse", sparse_setup, per_clip,
             lambda out, b: out.view(b, T, n_c, -1)),
    ]
    return case


def build_cases(s: dict, device: torch.device) -> list[Case]:
    return [
        affinity_case("temporal affinity GCN", 1, s["T"] * s["P"], s["C"], s["C"], s, device,
                      target=True),
        affinity_case("spatial affinity GCN", s["T"], s["P"], s["C"], s["C_s"], s, device,
                      target=True),
        *(sliding_case(scale, s, device) for scale in COCO17.scales),
        cross_case("s1", "s3", s, device),
        cross_case("s2", "s3", s, device),
    ]


# ------------------------------------------------------------------------ benchmark


def run_case(case: Case, repeats: int, warmup: int, sync, max_bytes: float,
             device: torch.device) -> dict[str, Any]:
    rows, reference, dense = [], None, None
    dense_impl = next(i for i in case.impls if i.kind == "dense")
    dense_out: Tensor | None = None

    def dense_output(b: int) -> Tensor:
        if b == case.batch:
            return dense_out
        module, inputs, call = dense_impl.setup(b)
        with torch.no_grad():
            return call(module.train(), *inputs)

    for impl in case.impls:
        if impl.skip is not None:
            rows.append({"label": impl.label, "kind": impl.kind, "status": impl.skip})
            continue
        try:
            res, out = time_impl(impl, case.batch, repeats, warmup, sync, max_bytes,
                                 reference, device)
        except Exception as err:  # e.g. Triton kernels still in development
            if impl.kind != "triton":
                raise
            rows.append({"label": impl.label, "kind": impl.kind,
                         "status": f"failed: {type(err).__name__}: {err}"})
            continue
        if impl.kind == "dense":
            dense_out, reference, dense = out, dense_output, res
        del out
        res["status"] = "measured"
        rows.append(res)
    for res in rows:
        if res["status"] == "measured" and dense is not None:
            res["x_dense_forward"] = res["forward_s"] / dense["forward_s"]
            res["x_dense_forward_backward"] = (res["forward_backward_s"]
                                               / dense["forward_backward_s"])
    return {"group": case.group, "name": case.name, "size": case.size, "batch": case.batch,
            "target_applies": case.target, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/layers.json")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (5; quick 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--max-sparse-gb", type=float, default=6.0,
                        help="a sparse layer estimated to need more runs on fewer clips, "
                             "its times scaled to the full batch (default 6)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (B=2, C=64, T=4 / 3): a smoke test")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    sizes = QUICK if args.quick else PAPER
    repeats = args.repeats or (3 if args.quick else 5)

    scatter = _installed("torch_scatter")
    results: dict[str, Any] = {
        "quick": args.quick, "sizes": sizes, "device": str(device),
        "repeats": repeats, "warmup": args.warmup, **machine(),
        "torch_geometric": torch_geometric.__version__,
        "torch_scatter": _version("torch-scatter") if scatter else None,
        "torch_sparse": _version("torch-sparse") if _installed("torch_sparse") else None,
        "pyg_lib": _version("pyg-lib") if _installed("pyg_lib") else None,
        "triton": _version("triton") if _installed("triton") else None,
        "max_sparse_gb": args.max_sparse_gb, "cases": [],
    }
    print_header(results)
    for case in build_cases(sizes, device):
        res = run_case(case, repeats, args.warmup, sync, args.max_sparse_gb * 2**30, device)
        print_case(res)
        results["cases"].append(res)
    results["target"] = target_summary(results["cases"])
    print_targets(results)
    save_results(args.out, results)
    return results


def target_summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"speedup_required": TARGET_SPEEDUP, "cases": {}}
    for case in cases:
        if not case["target_applies"]:
            continue
        rows = {r["kind"]: r for r in case["rows"] if r["status"] == "measured"}
        entry = {}
        for kind in ("sparse", "reference"):
            if kind in rows:
                entry[kind] = {"forward": rows[kind]["x_dense_forward"],
                               "forward_backward": rows[kind]["x_dense_forward_backward"]}
        if "sparse" in entry:
            entry["met_forward"] = entry["sparse"]["forward"] >= TARGET_SPEEDUP
            entry["met_forward_backward"] = entry["sparse"]["forward_backward"] >= TARGET_SPEEDUP
        out["cases"][case["name"]] = entry
    return out


# --------------------------------------------------------------------------- output

COLS = f"{'implementation':<34}{'fwd s':>9}{'fwd+bwd s':>11}{'x dense':>17}{'RSS+ MiB':>10}" \
       f"{'max rel diff':>14}"


def print_header(res: dict[str, Any]) -> None:
    sizes = "quick sizes (smoke test)" if res["quick"] else "paper sizes"
    print(f"graph layers, {sizes}; torch {res['torch']}, PyG {res['torch_geometric']}, "
          f"{res['threads']} threads, device {res['device']}"
          + (f" ({res['gpu']})" if res["gpu"] else "")
          + f"; median of {res['repeats']} (warm-up {res['warmup']})")
    print("torch-scatter: " + (res["torch_scatter"] or "not installed")
          + "; torch-sparse: " + (res["torch_sparse"] or "not installed")
          + f"; load average {res['load_average_start'][0]:.2f}")
    print("x dense = time / the dense torch layer's time (forward / forward+backward)")
    print(COLS + "\n" + "-" * len(COLS))


def print_case(case: dict[str, Any]) -> None:
    print(f"{case['group']} {case['name']}: {case['size']}")
    for r in case["rows"]:
        label = "  " + r["label"]
        if r["status"] != "measured":
            print(f"{label:<34}{r['status']}")
            continue
        star = "*" if r["scale"] != 1 else " "
        ratio = f"{r['x_dense_forward']:.2f} / {r['x_dense_forward_backward']:.2f}"
        rss = r["forward_backward"].get("rss_delta_mb")
        rss_s = f"{max(rss, 0.0):.0f}" if rss is not None else "-"
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else ""
        print(f"{label:<33}{star}{r['forward_s']:>9.4f}{r['forward_backward_s']:>11.4f}"
              f"{ratio:>17}{rss_s:>10}{diff:>14}")
        if r["scale"] != 1:
            print(f"{'':<4}* measured on {r['clips_measured']} of {case['batch']} clips "
                  f"(estimated peak {r['estimated_peak_gb']:.1f} GB at full size), "
                  f"times x{r['scale']:.2f}")


def print_targets(res: dict[str, Any]) -> None:
    t = res["target"]
    print(f"\ntarget (issue 5): dense affinity GCN >= {t['speedup_required']:.0f}x faster than "
          "the PyG sparse one")
    for name, e in t["cases"].items():
        if "sparse" not in e:
            print(f"  {name}: not measured")
            continue
        s = e["sparse"]
        verdict = lambda ok: "met" if ok else "not met"  # noqa: E731
        line = (f"  {name}: sparse / dense = {s['forward']:.2f}x forward "
                f"({verdict(e['met_forward'])}), {s['forward_backward']:.2f}x forward+backward "
                f"({verdict(e['met_forward_backward'])})")
        if "reference" in e:
            line += (f"; GCNConv / dense = {e['reference']['forward']:.2f}x / "
                     f"{e['reference']['forward_backward']:.2f}x")
        print(line)
    if res["quick"]:
        print("  (quick sizes: not the paper's, the ratios say nothing about the target)")


if __name__ == "__main__":
    main()
