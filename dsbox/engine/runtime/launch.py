"""Start-up of an engine's devices: worker processes, or device workers in this process.

Both launchers follow the same handshake (:mod:`messages`): every worker loads its weights;
once all have, each measures the KV blocks its device can hold; the engine decides each
instance's block count (:meth:`allocate`); pools are allocated and prefill pools are handed
to the decode workers that will pull from them. A failure anywhere raises
:class:`EngineStartupError` whose message is the failing worker's own first error line, and
leaves no process behind.

Worker processes fork from a forkserver that imported torch and the worker code once (fast
start-up; like spawn, no CUDA state is inherited). A script that creates a multi-process
engine at import time must do so under ``if __name__ == "__main__":`` (Python's rule for
every start method but fork); dsbox says so when it sees the mistake.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch.multiprocessing as tmp

from dsbox.engine.runtime.device_worker import DeviceWorker, WorkerSpec
from dsbox.engine.runtime.executors import LocalExecutor, ProcessExecutor
from dsbox.engine.runtime.messages import (
    AllocateKV,
    KVCapacity,
    MeasureKV,
    WorkerFailed,
    WorkerLoaded,
    WorkerStarted,
)
from dsbox.engine.runtime.worker import worker_main
from dsbox.kernels import without_interpreter_env

PRELOAD = ["dsbox.engine.runtime.worker", "dsbox.engine.model.runner",
           "dsbox.engine.model.weights", "dsbox.engine.runtime.parallel"]


class EngineStartupError(RuntimeError):
    """A worker failed while the engine started; the message is its first error line."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """One instance to start: its role, shape and one WorkerSpec per rank."""

    instance_id: int
    role: str
    tp: int
    pp: int
    workers: tuple[WorkerSpec, ...]


@dataclass(frozen=True, slots=True)
class Capacity:
    """What an instance's smallest device can hold."""

    num_blocks: int
    bytes_per_block: int  # on one device (its shard of layers and heads)


def guard_against_reimport() -> None:
    """Creating an engine inside a worker's start-up means the user's script re-ran while
    a worker imported it: say how to fix it instead of spawning workers recursively."""
    if multiprocessing.parent_process() is not None and \
            multiprocessing.current_process().name.startswith("dsbox-"):
        raise RuntimeError(
            "a dsbox engine was created while a worker process imported your script: create "
            "multi-process engines (a placement, LLM(placement=...)) under "
            "`if __name__ == \"__main__\":`")


class ProcessLauncher:
    """Worker processes for every instance of a placement."""

    def __init__(self, plans: list[InstancePlan], timeout: float,
                 on_progress: Callable[[str], None] | None = None) -> None:
        guard_against_reimport()
        self.plans = plans
        self.timeout = timeout
        self._progress = on_progress or (lambda _msg: None)
        ctx = tmp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        self.results = ctx.Queue()
        self.executors: dict[int, ProcessExecutor] = {}
        prefill = [p for p in plans if p.role == "prefill"]
        decode = [p for p in plans if p.role == "decode"]
        # one queue per (prefill worker, decode worker): the prefill pool is handed over once
        links = {(p.instance_id, pw.rank, d.instance_id, dw.rank): ctx.Queue()
                 for p in prefill for pw in p.workers for d in decode for dw in d.workers}
        cuda = any(w.device.startswith("cuda") for p in plans for w in p.workers)
        try:
            with without_interpreter_env() if cuda else contextlib.nullcontext():
                self._spawn(ctx, plans, links)
            self.loaded = {k: (m.weight_bytes, m.total_memory)
                           for k, m in self._collect(WorkerLoaded, self._loaded_one).items()}
        except BaseException:
            self.kill()
            raise

    def _spawn(self, ctx, plans: list[InstancePlan], links: dict) -> None:
        """One process per worker, with its inbox and its pool-exchange queues."""
        for plan in plans:
            processes, inboxes = [], []
            for w in plan.workers:
                exports = [q for (pi, pr, _di, _dr), q in links.items()
                           if pi == plan.instance_id and pr == w.rank]
                imports = {(pi, pr): q for (pi, pr, di, dr), q in links.items()
                           if di == plan.instance_id and dr == w.rank}
                inbox = ctx.Queue()
                proc = ctx.Process(
                    target=worker_main, name=f"dsbox-{w.role}{w.instance_id}-rank{w.rank}",
                    args=(w, inbox, self.results, exports, imports, os.getpid()), daemon=True)
                proc.start()
                processes.append(proc)
                inboxes.append(inbox)
            self.executors[plan.instance_id] = ProcessExecutor(plan.instance_id, processes,
                                                               inboxes)

    def measure(self, budgets: dict[tuple[int, int], int | None]) -> dict[int, Capacity]:
        """Each worker's blocks within its budget; per instance the smallest."""
        for plan in self.plans:
            for w, q in zip(plan.workers, self.executors[plan.instance_id].inboxes,
                            strict=True):
                q.put(MeasureKV(budgets.get((plan.instance_id, w.rank))))
        got = self._collect(KVCapacity)
        return {p.instance_id: Capacity(min(got[(p.instance_id, w.rank)].num_blocks
                                            for w in p.workers),
                                        max(got[(p.instance_id, w.rank)].bytes_per_block
                                            for w in p.workers))
                for p in self.plans}

    def allocate(self, num_blocks: dict[int, int]) -> None:
        for iid, ex in self.executors.items():
            ex.send_all(AllocateKV(num_blocks[iid]))
        self._collect(WorkerStarted)

    def _loaded_one(self, key: tuple[int, int], done: int, total: int) -> None:
        """Progress: one worker has its weights in place."""
        plan = next(p for p in self.plans if p.instance_id == key[0])
        name = plan.workers[key[1]].name
        self._progress(f"worker {name} loaded its weights ({done}/{total})")

    def _collect(self, kind: type, on_each: Callable[[tuple[int, int], int, int], None]
                 | None = None) -> dict[tuple[int, int], object]:
        """Wait for message ``kind`` from every worker; raise on an error or a death.
        ``on_each(key, done, total)`` hears each arrival."""
        want = {(p.instance_id, w.rank) for p in self.plans for w in p.workers}
        got: dict[tuple[int, int], object] = {}
        deadline = time.monotonic() + self.timeout
        dead_since = None
        while want - set(got):
            try:
                msg = self.results.get(timeout=0.2)
            except queue.Empty:
                dead = self._dead_worker()
                if dead is not None:
                    # its own error report may still be on its way: give it a moment
                    dead_since = dead_since or time.monotonic()
                    if time.monotonic() - dead_since > 1.0:
                        raise EngineStartupError(dead) from None
                if time.monotonic() > deadline:
                    raise EngineStartupError(
                        f"workers not past {kind.__name__} after {self.timeout:.0f} s") from None
                continue
            if isinstance(msg, WorkerFailed):
                raise EngineStartupError(msg.message, msg.detail)
            if isinstance(msg, kind):
                got[(msg.instance_id, msg.rank)] = msg
                if on_each is not None:
                    on_each((msg.instance_id, msg.rank), len(got), len(want))
        return got

    def _dead_worker(self) -> str | None:
        """A message naming a worker that has exited, if one has."""
        for plan in self.plans:
            ex = self.executors.get(plan.instance_id)
            for w, p in zip(plan.workers, ex.processes if ex else (), strict=False):
                if not p.is_alive():
                    return f"worker {w.name} died during start-up (exit code {p.exitcode})"
        return None

    def kill(self) -> None:
        for ex in self.executors.values():
            ex.kill()


class LocalLauncher:
    """Device workers in this process (every instance on one device: tp = pp = 1)."""

    def __init__(self, plans: list[InstancePlan], out: deque,
                 on_progress: Callable[[str], None] | None = None) -> None:
        bad = [p for p in plans if p.tp * p.pp != 1]
        if bad:
            raise ValueError("in-process instances run on one device each (tp=pp=1); "
                             "use worker processes for tensor or pipeline parallelism")
        self.plans = plans
        self.results = None
        self.workers = {}
        for done, p in enumerate(plans, 1):
            self.workers[p.instance_id] = DeviceWorker(p.workers[0])
            if on_progress is not None:
                on_progress(f"worker {p.workers[0].name} loaded its weights "
                            f"({done}/{len(plans)})")
        self.executors = {iid: LocalExecutor(iid, w, out) for iid, w in self.workers.items()}
        self.loaded = {(iid, 0): (w.weight_bytes, w.total_memory)
                       for iid, w in self.workers.items()}

    def measure(self, budgets: dict[tuple[int, int], int | None]) -> dict[int, Capacity]:
        return {iid: Capacity(w.kv_capacity(budgets.get((iid, 0))), w.bytes_per_block)
                for iid, w in self.workers.items()}

    def allocate(self, num_blocks: dict[int, int]) -> None:
        for iid, w in self.workers.items():
            w.allocate(num_blocks[iid])
        prefill = [p for p in self.plans if p.role == "prefill"]
        for plan in self.plans:
            if plan.role == "decode":
                self.executors[plan.instance_id].sources = {
                    p.instance_id: [(self.workers[p.instance_id].pool,
                                     self.workers[p.instance_id].shard)] for p in prefill}

    def kill(self) -> None:
        pass
