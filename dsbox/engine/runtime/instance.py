"""Instance: in the engine, one TP x PP group of devices serving one role.

It owns the instance's scheduler (colocated, prefill or decode), its executor (worker
processes or an in-process device worker), the step encoder that tracks what its workers
know, the steps in flight, and its counters (steps, KV bytes moved). It never blocks: the
engine's loop calls :meth:`submit_steps` and feeds results back. Every way a request leaves
the instance (finish, release after a pull, preemption) goes through here, so its workers
forget the request with the next step.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.scheduler import (
    DecodeScheduler,
    Phase,
    PrefillScheduler,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
    decode_micro_batch_cap,
)
from dsbox.engine.core.sequence import FinishReason
from dsbox.engine.runtime.messages import PullKV
from dsbox.engine.runtime.step_protocol import StepEncoder
from dsbox.metrics.stats import InstanceStats
from dsbox.metrics.steps import StepRecord

SCHEDULERS = {"colocated": Scheduler, "prefill": PrefillScheduler, "decode": DecodeScheduler}
RATE_WINDOW_S = 5.0  # the KV transfer rate is measured over this many seconds


@dataclass(slots=True)
class Instance:
    index: int                    # position in the placement's expanded instance list
    role: str
    tp: int
    pp: int
    devices: tuple[str, ...]
    executor: object = None
    scheduler: Scheduler | None = None
    healthy: bool = True
    error: str | None = None
    in_flight: dict[int, SchedulerOutput] = field(default_factory=dict)
    step_starts: dict[int, float] = field(default_factory=dict)  # step id -> when scheduled
    stage0_busy: bool = False     # a step is in the first pipeline stage (whole model, pp=1)
    encoder: StepEncoder = field(default_factory=StepEncoder)
    num_steps: int = 0
    kv_bytes_in: int = 0
    kv_bytes_out: int = 0
    _transfers: deque = field(default_factory=deque)  # (time, bytes) within RATE_WINDOW_S
    _step_ids: itertools.count = field(default_factory=itertools.count)

    @property
    def instance_id(self) -> int:
        return self.index

    @property
    def name(self) -> str:
        return f"{self.role} instance {self.index}"

    def make_scheduler(self, num_blocks: int, block_size: int, config: SchedulerConfig) -> None:
        self.scheduler = SCHEDULERS[self.role](config, BlockManager(num_blocks, block_size))

    # --- steps ---------------------------------------------------------------------------
    def busy_seq_ids(self) -> set[int]:
        return {s.seq_id for out in self.in_flight.values() for s in out.seqs}

    def submit_steps(self, now: float) -> int:
        """Send the next step when the first pipeline stage is free (with PP, several
        micro-batches are then in flight, one per stage; at most ``pp`` decode ones, see
        ``decode_micro_batch_cap``); returns how many were sent."""
        sched = self.scheduler
        if not self.healthy or self.stage0_busy:
            return 0
        start = time.monotonic()
        decoding = sum(out.phase is Phase.DECODE for out in self.in_flight.values())
        cap = decode_micro_batch_cap(sched.num_running, self.pp, decoding)
        busy = self.busy_seq_ids() if self.in_flight else ()
        out = sched.schedule(now, busy, cap)
        if out is None or not out.seqs:
            if out is not None:  # a step that only preempted
                for sid in out.preempted:
                    self.encoder.forget(sid)
            if self.encoder.to_drop:  # no step will carry the news: tell the workers now
                self.executor.forget(self.encoder.take_dropped())
            return 0
        step_id = next(self._step_ids)
        self.in_flight[step_id] = out
        self.step_starts[step_id] = start
        self.stage0_busy = True
        self.num_steps += 1
        self.executor.run_step(step_id, self.encoder.encode(out, sched.seqs))
        return 1

    def step_record(self, step_id: int, out: SchedulerOutput, end: float,
                    model_ms: float) -> StepRecord:
        """What is kept of a step whose answer the engine has handled (at ``end``)."""
        new = [s.num_new_tokens for s in out.seqs]
        return StepRecord(self.index, self.role, out.phase is Phase.PREFILL, len(out.seqs),
                          sum(new), sum(s.context_len for s in out.seqs),
                          sum(n * n for n in new), self.step_starts.pop(step_id, end), end,
                          model_ms)

    def stage0_done(self) -> None:
        """The first stage passed its step on (PP), or a step finished (no PP)."""
        self.stage0_busy = False

    # --- requests leaving ----------------------------------------------------------------
    def finish(self, seq_id: int, reason: FinishReason, now: float) -> None:
        self.scheduler.finish(seq_id, reason, now)
        self.encoder.forget(seq_id)

    def release(self, seq_id: int) -> None:
        """Prefill: a decode instance has the KV of ``seq_id``; free it here."""
        self.encoder.forget(seq_id)

    # --- KV transfer ---------------------------------------------------------------------
    def pull(self, pull_id: int, src: Instance, seq_id: int) -> None:
        self.executor.pull(PullKV(
            pull_id, src.index, tuple(src.scheduler.block_manager.block_table(seq_id)),
            tuple(self.scheduler.block_manager.block_table(seq_id))))

    def count_transfer(self, nbytes: int, now: float, incoming: bool) -> None:
        if incoming:
            self.kv_bytes_in += nbytes
        else:
            self.kv_bytes_out += nbytes
        self._transfers.append((now, nbytes))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._transfers and self._transfers[0][0] < now - RATE_WINDOW_S:
            self._transfers.popleft()

    # --- state ---------------------------------------------------------------------------
    def stats(self, now: float) -> InstanceStats:
        s = self.scheduler
        bm = s.block_manager if s is not None else None
        self._prune(now)
        return InstanceStats(
            instance_id=self.index, role=self.role, tp=self.tp, pp=self.pp,
            devices=self.devices, healthy=self.healthy,
            num_waiting=s.num_waiting if s else 0,
            num_running=(len(self.busy_seq_ids()) if self.role == "prefill"
                         else s.num_running if s else 0),
            num_prefilled=len(getattr(s, "prefilled", ())),
            num_pending_pull=len(getattr(s, "pending", ())) + len(getattr(s, "pulling", ())),
            kv_blocks_used=bm.num_used_blocks if bm else 0,
            kv_blocks_total=bm.num_blocks if bm else 0,
            kv_bytes_in=self.kv_bytes_in, kv_bytes_out=self.kv_bytes_out,
            kv_transfer_rate=sum(b for _, b in self._transfers) / RATE_WINDOW_S,
            num_steps=self.num_steps, error=self.error,
            pids=tuple(p.pid for p in getattr(self.executor, "processes", ())))

    def state_sizes(self) -> dict[str, int]:
        """Sizes of every per-request map held for this instance (tests: all 0 when idle)."""
        s = self.scheduler
        sizes = {"in_flight": len(self.in_flight), "step_starts": len(self.step_starts),
                 "encoder.known": len(self.encoder.known),
                 "encoder.to_drop": len(self.encoder.to_drop),
                 "scheduler.seqs": len(s.seqs), "scheduler.waiting": len(s.waiting),
                 "scheduler.running": len(s.running),
                 "block_tables": len(s.block_manager.held_by())}
        for name in ("prefilled", "pending", "pulling"):
            if hasattr(s, name):
                sizes[f"scheduler.{name}"] = len(getattr(s, name))
        return sizes
