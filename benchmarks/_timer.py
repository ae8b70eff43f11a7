"""Shared timer for the benchmarks: warm-up, device sync, median of repeats, peak memory.

``measure(fn)`` calls ``fn()`` ``warmup`` times, then ``repeats`` timed times (wall clock,
``time.perf_counter``; ``sync()`` after each call, e.g. ``torch.cuda.synchronize``, so
asynchronous device work is counted), then once more untimed to measure memory:

* ``peak_traced_mb``: the peak of the allocations ``tracemalloc`` sees during that call
  (Python objects and numpy arrays; **not** torch tensors, whose allocator it cannot see);
* ``peak_rss_mb`` / ``rss_delta_mb``: the process's resident-set high-water mark during the
  call and its rise over the resident set before it, from ``VmHWM`` in ``/proc/self/status``
  after resetting it through ``/proc/self/clear_refs`` (Linux); where that reset is not
  possible, ``resource.getrusage(...).ru_maxrss``, the peak over the whole process so far
  (``rss_reset`` says which). These count torch and numpy alike, but memory that the
  allocator kept from earlier frees is reused without raising the RSS, so small
  allocations can show a delta of 0: read ``peak_traced_mb`` for numpy work.

``compare({"a": fa, "b": fb})`` times several functions round-robin (``a b a b ...``, each
synced), so that a slow drift of the machine's load falls on all of them alike: use it when
the question is a small difference between two times (e.g. a model step with and without
its head). It returns the same timing fields as ``measure`` per function, without memory.

``machine()`` describes where a run happens (versions, GPU, threads, platform, load
average, date) for the results, and ``save_results(path, results)`` adds the load average
at the end and writes them as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["compare", "machine", "measure", "save_results"]


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, else KiB


def _stats(times: list[float], repeats: int, warmup: int) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "mean_s": statistics.fmean(times), "times_s": times, "repeats": repeats,
        "warmup": warmup,
    }


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
            sync: Callable[[], Any] | None = None, memory: bool = True) -> dict[str, Any]:
    """Time ``fn()``; return seconds (``median_s``, ``min_s``, ``max_s``, ``mean_s``,
    ``times_s``), peak memory in MiB (see the module docstring; ``memory=False`` skips the
    extra call) and ``value``, what the last call returned.

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    sync = sync or (lambda: None)
    value = None
    for _ in range(warmup):
        value = fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        sync()
        times.append(time.perf_counter() - start)
    out = _stats(times, repeats, warmup)
    if memory:
        del value
        rss_before = _status_kb("VmRSS")
        reset = _reset_peak_rss() and rss_before is not None
        tracemalloc.start()
        value = fn()
        sync()
        out["peak_traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        hwm = _status_kb("VmHWM") if reset else None
        out["rss_reset"] = hwm is not None
        out["peak_rss_mb"] = hwm / 2**10 if hwm is not None else _maxrss_mb()
        out["rss_delta_mb"] = (hwm - rss_before) / 2**10 if hwm is not None else None
    out["value"] = value
    return out


def compare(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
            sync: Callable[[], Any] | None = None) -> dict[str, dict[str, Any]]:
    """Time each of ``fns`` round-robin: ``warmup`` untimed rounds, then ``repeats`` timed
    rounds, each round calling every function once in order (``sync()`` after each call).

    Returns:
        ``{name: stats}`` with the timing fields of :func:`measure` (no memory, no value).

    Raises:
        ValueError: ``repeats < 1``, ``warmup < 0`` or no functions.
    """
    if repeats < 1 or warmup < 0 or not fns:
        raise ValueError(f"need repeats >= 1, warmup >= 0 and functions, got {repeats}, "
                         f"{warmup}, {len(fns)}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: _stats(t, repeats, warmup) for name, t in times.items()}


def machine() -> dict[str, Any]:
    """The machine and software of a run, for its results: torch version, GPU name (or
    :obj:`None`), torch's CPU threads, platform, processor, CPU count, the load average
    (1, 5, 15 minutes) at the start, and the date."""
    return {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(), "platform": platform.platform(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save_results(path: Path, results: dict[str, Any]) -> None:
    """Add ``load_average_end`` to ``results`` and write them to ``path`` as JSON (the
    folder is created)."""
    results["load_average_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")
