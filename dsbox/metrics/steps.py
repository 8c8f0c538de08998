"""StepRecord and PullRecord: what the engine keeps of every step it ran and every KV pull
its decode instances made, for the profiler and the bench.

A step's wall time runs from when its instance started to schedule it to when the engine
had handled its answer (sampled tokens applied, outputs sent to their callers): the time
the instance's next step waited for it, everything the runtime does per step included.
``model_ms`` is the time the (reporting) worker spent in the model for it. The engine keeps
the last ``STEP_LOG_SIZE`` in a :class:`~dsbox.metrics.cursor_log.CursorLog`
(``Engine.steps_since``); ``dsbox profile`` fits the runtime's cost per sequence from them
(:mod:`dsbox.placement.overhead`).

A KV pull is work on its decode instance too: the decode worker copies the request's KV
between its steps, in the order the commands came, so a step sent after a pull waits for it.
A :class:`PullRecord` holds when the decode workers began and ended the copy (the earliest
start and latest end over their TP/PP ranks) and the bytes they copied; ``dsbox profile``
fits a pull's cost per prompt token from them (``Engine.pulls_since``), and the simulator
charges it to the decode instance.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_LOG_SIZE = 20_000
PULL_LOG_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of one instance; times from ``time.monotonic()``, seconds."""

    instance_id: int
    role: str                  # the instance's: colocated, prefill or decode
    is_prefill: bool
    num_seqs: int
    num_tokens: int            # new tokens computed (prompt tokens, or 1 per decode sequence)
    sum_context: int           # KV length of every sequence after the step, summed
    sum_sq_tokens: int         # sum of the squared new tokens per sequence (prefill's l^2)
    start: float
    end: float
    model_ms: float = 0.0      # the worker's time in the model, ms

    @property
    def wall_ms(self) -> float:
        return (self.end - self.start) * 1e3

    def to_dict(self) -> dict:
        return {"instance_id": self.instance_id, "role": self.role,
                "phase": "prefill" if self.is_prefill else "decode",
                "num_seqs": self.num_seqs, "num_tokens": self.num_tokens,
                "sum_context": self.sum_context, "sum_sq_tokens": self.sum_sq_tokens,
                "start": self.start, "end": self.end, "wall_ms": self.wall_ms,
                "model_ms": self.model_ms}


@dataclass(frozen=True, slots=True)
class PullRecord:
    """One request's KV pull into a decode instance; times from ``time.monotonic()``."""

    instance_id: int           # the decode instance that pulled
    src_instance_id: int       # the prefill instance that held the KV
    num_tokens: int            # the prompt tokens whose KV moved
    nbytes: int                # KV bytes copied, over every rank
    sent: float                # when the engine sent the pull command
    start: float               # when the first decode worker began the copy
    end: float                 # when the last one ended it

    @property
    def copy_ms(self) -> float:
        return (self.end - self.start) * 1e3

    def to_dict(self) -> dict:
        return {"instance_id": self.instance_id, "src_instance_id": self.src_instance_id,
                "num_tokens": self.num_tokens, "nbytes": self.nbytes, "sent": self.sent,
                "start": self.start, "end": self.end, "copy_ms": self.copy_ms}
