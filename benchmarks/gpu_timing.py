"""GPU timing for the benchmarks: device time per call, with a cold L2 and without launch
overhead, plus the plain per-call time for comparison.

``time_calls(calls)`` takes one zero-argument callable per copy of the inputs (the caller
makes enough copies that a round of them is several times the L2 cache, so no call finds
its operands left in L2 by the previous one) and measures two figures:

- ``graph_ms``: a CUDA graph of ``reps`` back-to-back calls, cycling through the copies,
  replayed and timed with CUDA events; divided by ``reps``. No launch overhead, no L2 reuse
  beyond what the rotation allows. The kernel's own time.
- ``bench_ms``: ``triton.testing.do_bench`` on the first copy (it flushes the L2 before every
  call; each call is timed alone, so a call shorter than its launch shows the launch).

If capture fails (an op that cannot be captured), ``graph_ms`` is None and ``note`` says why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    graph_ms: float | None
    bench_ms: float
    copies: int
    note: str = ""

    @property
    def ms(self) -> float:
        """The figure to report: the graph time when there is one."""
        return self.graph_ms if self.graph_ms is not None else self.bench_ms


def l2_bytes() -> int:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or 50 << 20)


def copies_for(bytes_per_call: int, limit: int = 16) -> int:
    """Input copies so that a round of calls reads at least 4x the L2."""
    return max(1, min(limit, math.ceil(4 * l2_bytes() / max(1, bytes_per_call))))


def time_calls(calls: list[Callable[[], object]], reps: int = 20, replays: int = 5,
               bench_rep_ms: int = 40) -> Timing:
    """Time ``calls`` (one per input copy; see the module docstring)."""
    import triton.testing

    for call in calls:  # compile and allocate outside the graph
        call()
    torch.cuda.synchronize()
    graph_ms, note = None, ""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for call in calls:
                call()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(reps):
                calls[i % len(calls)]()
        graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(replays):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / reps)
        graph_ms = statistics.median(times)
        del graph
    except Exception as exc:  # report it, fall back to do_bench
        note = f"graph capture failed: {type(exc).__name__}: {str(exc)[:120]}"
        torch.cuda.synchronize()
    bench_ms = triton.testing.do_bench(calls[0], warmup=10, rep=bench_rep_ms,
                                       return_mode="median")
    return Timing(graph_ms, bench_ms, len(calls), note)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device memory bandwidth in bytes/s from a ``copy_`` of ``nbytes`` (bytes moved:
    read + write, i.e. 2 x nbytes)."""
    bufs = [torch.empty(nbytes // 2, dtype=torch.float16, device="cuda").normal_()
            for _ in range(2)]
    t = time_calls([lambda: bufs[1].copy_(bufs[0])], reps=5, replays=5)
    bufs.clear()
    torch.cuda.empty_cache()
    return 2 * nbytes / (t.ms / 1e3)
