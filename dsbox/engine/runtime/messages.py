"""Typed messages between the engine and its workers, in both directions.

Start-up, for every worker: ``WorkerLoaded`` (weights in place) -> the engine sends
``MeasureKV`` once all have loaded -> ``KVCapacity`` -> ``AllocateKV`` with the instance's
block count (the smallest of its ranks) -> pools are exchanged between prefill and decode
workers -> ``WorkerStarted``. Then ``RunStep`` / ``PullKV`` in order, answered by
``StepDone`` (last stage, TP rank 0), ``StageFree`` (first stage, with PP) and ``PullDone``
(every decode rank); ``Forget`` drops requests' state when no step follows soon;
``Probe`` asks a worker how many requests it keeps; ``Stop`` ends it.
Any exception in a worker becomes one ``WorkerFailed`` and the worker exits.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.engine.runtime.step_protocol import StepDelta

# --- engine -> worker --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeasureKV:
    """Every worker has loaded: measure the blocks this device can hold, within
    ``budget_bytes`` when the engine sized the pool (CUDA), else by the worker's own rule."""

    budget_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class AllocateKV:
    num_blocks: int


@dataclass(frozen=True, slots=True)
class RunStep:
    step_id: int
    delta: StepDelta


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop these requests' state (sent when no step would carry the news soon)."""

    seq_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PullKV:
    """Copy a request's KV from ``src_instance``'s pools: src block i -> dst block i."""

    pull_id: int
    src_instance: int
    src_blocks: tuple[int, ...]
    dst_blocks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask for the worker's internal state sizes (tests: nothing outlives a request)."""

    probe_id: int = 0


@dataclass(frozen=True, slots=True)
class Stop:
    pass


# --- worker -> engine --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerLoaded:
    instance_id: int
    rank: int
    weight_bytes: int
    total_memory: int  # of the worker's device (bytes)


@dataclass(frozen=True, slots=True)
class KVCapacity:
    instance_id: int
    rank: int
    num_blocks: int
    bytes_per_block: int


@dataclass(frozen=True, slots=True)
class WorkerStarted:
    instance_id: int
    rank: int
    pid: int


@dataclass(frozen=True, slots=True)
class StepDone:
    instance_id: int
    step_id: int
    token_ids: list[int]
    logprobs: list | None = None
    model_ms: float = 0.0  # the step's time on the reporting worker, ms (the profiler reads it)


@dataclass(frozen=True, slots=True)
class StageFree:
    """With PP: the step left the first stage; the next one may enter."""

    instance_id: int
    step_id: int


@dataclass(frozen=True, slots=True)
class PullDone:
    instance_id: int
    rank: int
    pull_id: int
    nbytes: int
    start: float = 0.0  # when the worker began and ended the copy, time.monotonic() (one
    end: float = 0.0    # clock for every process of the box), seconds


@dataclass(frozen=True, slots=True)
class ProbeReply:
    instance_id: int
    rank: int
    num_requests: int
    probe_id: int = 0  # the Probe's: a late answer to an earlier probe is told apart


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    instance_id: int
    rank: int
    message: str      # one line: the exception's type and text
    detail: str = ""  # the traceback


@dataclass(frozen=True, slots=True)
class Wake:
    """Posted by the engine itself on its results queue: a call came in while its loop
    sleeps on that queue (so a request arriving to an idle engine starts at once)."""
