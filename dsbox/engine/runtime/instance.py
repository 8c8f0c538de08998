"""Instance: in the controller, the handle of one TP x PP group of worker processes.

It owns the instance's scheduler (colocated, prefill or decode), its workers' inboxes and
processes, and the steps and pulls in flight. It never blocks: the controller's loop calls
``submit_steps`` and feeds results back.
"""

from __future__ import annotations

import itertools
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
from dsbox.engine.core.step_batch import build_step_batch
from dsbox.engine.runtime.worker import Pull, Step, WorkerSpec

SCHEDULERS = {"colocated": Scheduler, "prefill": PrefillScheduler, "decode": DecodeScheduler}


@dataclass(slots=True)
class InstanceStatus:
    """What the dashboard and /metrics show of one instance."""

    instance_id: int
    role: str
    tp: int
    pp: int
    devices: tuple[str, ...]
    healthy: bool
    num_waiting: int
    num_running: int
    num_prefilled: int       # prefill: KV held, waiting to be pulled
    num_pending_pull: int    # decode: offered, not pulled yet
    kv_blocks_used: int
    kv_blocks_total: int
    error: str | None = None


@dataclass(slots=True)
class Instance:
    instance_id: int
    role: str
    tp: int
    pp: int
    workers: list[WorkerSpec]
    processes: list = field(default_factory=list)
    inboxes: list = field(default_factory=list)
    scheduler: Scheduler | None = None
    healthy: bool = True
    error: str | None = None
    in_flight: dict[int, SchedulerOutput] = field(default_factory=dict)
    stage0_busy: bool = False  # a step is in the first pipeline stage (the whole model, pp=1)
    _step_ids: itertools.count = field(default_factory=itertools.count)

    def make_scheduler(self, num_blocks: int, block_size: int, config: SchedulerConfig) -> None:
        self.scheduler = SCHEDULERS[self.role](config, BlockManager(num_blocks, block_size))

    def send_all(self, cmd) -> None:
        for q in self.inboxes:
            q.put(cmd)

    def busy_seq_ids(self) -> set[int]:
        return {s.seq_id for out in self.in_flight.values() for s in out.seqs}

    def submit_steps(self, now: float) -> int:
        """Send the next step when the first pipeline stage is free (with PP, several
        micro-batches are then in flight, one per stage; at most ``pp`` decode ones, see
        ``decode_micro_batch_cap``); returns how many were sent."""
        sched = self.scheduler
        if not self.healthy or self.stage0_busy:
            return 0
        decoding = sum(out.phase is Phase.DECODE for out in self.in_flight.values())
        cap = decode_micro_batch_cap(sched.num_running, self.pp, decoding)
        out = sched.schedule(now, self.busy_seq_ids(), cap)
        if out is None or not out.seqs:
            return 0
        step_id = next(self._step_ids)
        self.in_flight[step_id] = out
        self.stage0_busy = True
        self.send_all(Step(step_id, build_step_batch(out, sched.seqs)))
        return 1

    def stage0_done(self) -> None:
        """The first stage passed its step on (PP), or a step finished (no PP)."""
        self.stage0_busy = False

    def pull(self, pull_id: int, src_instance: int, src_blocks: list[int],
             dst_blocks: list[int]) -> None:
        self.send_all(Pull(pull_id, src_instance, list(src_blocks), list(dst_blocks)))

    def status(self) -> InstanceStatus:
        s = self.scheduler
        bm = s.block_manager if s is not None else None
        return InstanceStatus(
            instance_id=self.instance_id, role=self.role, tp=self.tp, pp=self.pp,
            devices=tuple(w.device for w in self.workers), healthy=self.healthy,
            num_waiting=s.num_waiting if s else 0,
            num_running=s.num_running if s else 0,
            num_prefilled=len(getattr(s, "prefilled", ())),
            num_pending_pull=len(getattr(s, "pending", ())) + len(getattr(s, "pulling", ())),
            kv_blocks_used=bm.num_used_blocks if bm else 0,
            kv_blocks_total=bm.num_blocks if bm else 0,
            error=self.error,
        )
