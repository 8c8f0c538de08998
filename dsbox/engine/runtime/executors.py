"""Executors: how an instance's steps and pulls reach the devices that run them.

- :class:`ProcessExecutor`: the instance's worker processes (one per device), reached by
  one inbox queue each; their answers arrive on the engine's shared results queue.
- :class:`LocalExecutor`: one :class:`DeviceWorker` in this process (an instance of one
  device: ``tp = pp = 1``); a call runs at once and its answer is appended to the engine's
  local results.

Both speak the same messages (:mod:`messages`), so the engine's loop handles their answers
the same way and never asks which kind it has.
"""

from __future__ import annotations

import time
import traceback
from collections import deque

from dsbox.engine.runtime.device_worker import DeviceWorker
from dsbox.engine.runtime.messages import (
    Forget,
    Probe,
    ProbeReply,
    PullDone,
    PullKV,
    RunStep,
    StepDone,
    Stop,
    WorkerFailed,
)
from dsbox.engine.runtime.step_protocol import StepDelta


class ProcessExecutor:
    """The worker processes of one instance."""

    def __init__(self, instance_id: int, processes: list, inboxes: list) -> None:
        self.instance_id = instance_id
        self.processes = processes
        self.inboxes = inboxes

    def send_all(self, msg) -> None:
        for q in self.inboxes:
            q.put(msg)

    def run_step(self, step_id: int, delta: StepDelta) -> None:
        self.send_all(RunStep(step_id, delta))

    def pull(self, cmd: PullKV) -> None:
        self.send_all(cmd)

    def forget(self, seq_ids: tuple[int, ...]) -> None:
        self.send_all(Forget(seq_ids))

    def probe(self, probe_id: int = 0) -> int:
        """Send a probe; returns how many replies to expect."""
        self.send_all(Probe(probe_id))
        return len(self.inboxes)

    @property
    def sentinels(self) -> list:
        return [p.sentinel for p in self.processes]

    def exit_codes(self) -> list[int | None]:
        return [p.exitcode for p in self.processes if not p.is_alive()]

    def stop(self) -> None:
        for q in self.inboxes:
            try:
                q.put(Stop())
            except (ValueError, OSError):
                pass

    def join(self, timeout: float) -> None:
        for p in self.processes:
            p.join(timeout)

    def kill(self) -> None:
        for p in self.processes:
            if p.is_alive():
                p.kill()
        for p in self.processes:
            p.join(5)


class LocalExecutor:
    """One device worker in this process; answers go to ``out`` at once."""

    def __init__(self, instance_id: int, worker: DeviceWorker, out: deque,
                 sources: dict[int, list] | None = None) -> None:
        self.instance_id = instance_id
        self.worker = worker
        self.out = out
        self.sources = sources or {}  # prefill instance id -> [(pool, shard)] (pulls)
        self.processes: list = []

    def _guarded(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # the instance fails, as a worker process would
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.out.append(WorkerFailed(self.instance_id, 0, first, traceback.format_exc()))

    def run_step(self, step_id: int, delta: StepDelta) -> None:
        def run() -> None:
            start = time.perf_counter()
            tokens, logprobs = self.worker.step(delta)
            model_ms = (time.perf_counter() - start) * 1e3
            self.out.append(StepDone(self.instance_id, step_id, tokens, logprobs, model_ms))

        self._guarded(run)

    def pull(self, cmd: PullKV) -> None:
        def run() -> None:
            start = time.monotonic()
            nbytes = self.worker.pull(self.sources[cmd.src_instance], cmd.src_blocks,
                                      cmd.dst_blocks)
            self.out.append(PullDone(self.instance_id, 0, cmd.pull_id, nbytes, start,
                                     time.monotonic()))

        self._guarded(run)

    def forget(self, seq_ids: tuple[int, ...]) -> None:
        self.worker.requests.drop(seq_ids)

    def probe(self, probe_id: int = 0) -> int:
        self.out.append(ProbeReply(self.instance_id, 0, len(self.worker.requests), probe_id))
        return 1

    @property
    def sentinels(self) -> list:
        return []

    def exit_codes(self) -> list[int | None]:
        return []

    def stop(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        pass

    def kill(self) -> None:
        pass
