"""The one small interface every bench target implements, and what targets share.

A target replays a :class:`~dsbox.workloads.Trace` and returns one
:class:`~dsbox.metrics.records.RequestRecord` per request, in trace order, with
``request_id`` = the request's index in the trace and every stamp in seconds from the
trace's time 0 (a request's ``arrival`` is its arrival time in the trace). So records of
the engine, the simulator and a remote server line up request by request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.workloads import Trace

#: ``progress(done)``: requests finished so far in the current run.
Progress = Callable[[int], None]

REAL, SIMULATED, ENDPOINT = "real", "simulated", "endpoint"
KINDS = (REAL, SIMULATED, ENDPOINT)


class Target(Protocol):
    """Where a trace runs: the engine here, the simulator, or an OpenAI-compatible server."""

    kind: str          # real | simulated | endpoint
    placement: str     # placement text ("" when unknown)
    num_gpus: int      # devices the placement uses (per-GPU figures divide by it)

    def run(self, trace: Trace, progress: Progress) -> list[RequestRecord]:
        """Replay ``trace`` (arrivals in real time, or simulated) and return its records."""
        ...

    def close(self) -> None:
        ...


_STAMPS = ("prefill_queued", "prefill_start", "prefill_end", "transfer_start",
           "transfer_end", "decode_queued", "decode_start", "finish")


def shifted(record: RequestRecord, origin: float, index: int) -> RequestRecord:
    """``record`` with every stamp relative to ``origin`` and ``request_id`` = ``index``."""
    lc = record.lifecycle
    moved = {s: (None if getattr(lc, s) is None else getattr(lc, s) - origin) for s in _STAMPS}
    new = Lifecycle(arrival=lc.arrival - origin, token_times=[t - origin for t in lc.token_times],
                    num_preemptions=lc.num_preemptions, prefill_instance=lc.prefill_instance,
                    decode_instance=lc.decode_instance, **moved)
    return replace(record, request_id=index, lifecycle=new)
