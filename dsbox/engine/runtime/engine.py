"""Engine: serves requests through the instances of a placement (an ``EngineClient``).

It resolves the config (:mod:`setup`), starts the instances (:mod:`launch`: worker
processes, one per device, or device workers in this process, behind one executor
interface), sizes their KV pools, and runs one loop thread. The loop drains the callers'
calls (a queue), submits each instance's next step, starts KV pulls, takes in the workers'
answers and checks their health; what happens to each request (routing, handoff, endings,
outputs) is :mod:`request_flow`'s. One thread owns all scheduler state, so it needs no
locks; questions about it (``stats``, ``state_sizes``) are answered by the loop itself.
A failing worker marks its instance unhealthy and ends that instance's requests with an
error; the others carry on.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import wait as wait_sentinels

import torch

from dsbox.client.base import EngineClient, EngineInfo, OutputCallback, Prompt
from dsbox.config import EngineConfig
from dsbox.engine.core.request_tracker import RequestTracker
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import SchedulerConfig
from dsbox.engine.core.sequence import Sequence as Seq
from dsbox.engine.runtime.device_worker import DeviceWorker
from dsbox.engine.runtime.instance import Instance
from dsbox.engine.runtime.kv_budgets import kv_budgets
from dsbox.engine.runtime.launch import (
    Capacity,
    InstancePlan,
    LocalLauncher,
    ProcessLauncher,
)
from dsbox.engine.runtime.messages import (
    ProbeReply,
    PullDone,
    StageFree,
    StepDone,
    Wake,
    WorkerFailed,
)
from dsbox.engine.runtime.request_flow import RequestFlow
from dsbox.engine.runtime.setup import EngineSetup, resolve_setup
from dsbox.metrics.cursor_log import CursorLog
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.stats import EngineStats, Health
from dsbox.metrics.steps import PULL_LOG_SIZE, STEP_LOG_SIZE, PullRecord, StepRecord

logger = logging.getLogger("dsbox")
STARTUP_TIMEOUT_S = 600.0
HEALTH_CHECK_S = 0.05
PROBE_TIMEOUT_S = 20.0  # how long state_sizes waits for every live worker's answer


class Engine(EngineClient):
    """Start the instances of ``config.placement`` and serve requests."""

    def __init__(self, config: EngineConfig, *, startup_timeout: float = STARTUP_TIMEOUT_S,
                 on_progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        setup = resolve_setup(config)
        self.setup: EngineSetup = setup
        self.spec = setup.spec
        self.source = setup.source
        self.device = setup.device
        self.dtype = setup.dtype
        self.tokenizer = setup.tokenizer
        self.placement = setup.placement
        self.max_model_len = setup.max_model_len
        self.warnings = list(setup.warnings)
        self._progress = on_progress or (lambda _msg: None)
        self._local_results: deque = deque()
        self.steps: CursorLog[StepRecord] = CursorLog(STEP_LOG_SIZE)
        self.pull_log: CursorLog[PullRecord] = CursorLog(PULL_LOG_SIZE)
        self._inbox: queue.Queue = queue.Queue()
        self._wake = threading.Event()  # set by every call; the in-process loop sleeps on it
        self._sleeping = False  # the workers' loop is (about to be) blocked on their results
        self._ids = itertools.count()
        self._closed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_error: BaseException | None = None
        self._probes: dict[tuple[int, int], int] | None = None
        self._probe_ids = itertools.count(1)
        self._probe_id = 0
        self.probe_timeout_s = PROBE_TIMEOUT_S
        self._started = time.monotonic()
        self.instances = [Instance(i, s.role, s.tp, s.pp, setup.names[i])
                          for i, s in enumerate(setup.instances)]
        self._launcher = None
        try:
            self._start(startup_timeout)
        except BaseException:
            if self._launcher is not None:
                self._launcher.kill()
            self._closed = True
            raise

    # --- start-up ------------------------------------------------------------------------
    def _start(self, timeout: float) -> None:
        plans = self.setup.plans()
        n = sum(len(p.workers) for p in plans)
        if self.setup.in_process:
            torch.set_num_threads(self.setup.num_threads)
            self._progress(f"loading weights ({n} instance{'s' if n > 1 else ''} in-process)")
            self._launcher = LocalLauncher(plans, self._local_results, self._progress)
        else:
            self._check_shared_memory(plans)
            self._progress(f"starting {n} worker processes and loading weights")
            self._launcher = ProcessLauncher(plans, timeout, self._progress)
        self._results = self._launcher.results
        self._progress("sizing the KV cache")
        budgets = kv_budgets(plans, self._launcher.loaded, self.config.kv_cache_fraction)
        blocks = self._size_pools(self._launcher.measure(budgets))
        self._progress("allocating the KV cache")
        self._launcher.allocate(blocks)
        sched_cfg = SchedulerConfig(self.config.max_num_batched_tokens, self.config.max_num_seqs)
        for inst in self.instances:
            inst.executor = self._launcher.executors[inst.index]
            inst.make_scheduler(blocks[inst.index], self.config.block_size, sched_cfg)
        self.tracker = RequestTracker(self.tokenizer, self.spec, self.max_model_len)
        self.flow = RequestFlow(self.instances, self.tracker)
        self._thread = threading.Thread(target=self._loop, name="dsbox-engine", daemon=True)
        self._thread.start()
        self._progress("ready")

    def _size_pools(self, capacity: dict[int, Capacity]) -> dict[int, int]:
        """Blocks per instance; each must hold one sequence of ``max_model_len`` tokens."""
        bs = self.config.block_size
        need = -(-self.max_model_len // bs)
        for inst in self.instances:
            cap = capacity[inst.index]
            if cap.num_blocks < need:
                raise ValueError(
                    f"the KV pool of {inst.name} holds {cap.num_blocks * bs} tokens "
                    f"({_mib(cap.num_blocks * cap.bytes_per_block)} per device), less than one "
                    f"sequence of {self.max_model_len} tokens: raise kv_cache_memory to at "
                    f"least {_mib(need * cap.bytes_per_block)} or lower max_model_len")
        return {i: c.num_blocks for i, c in capacity.items()}

    def _check_shared_memory(self, plans: list[InstancePlan]) -> None:
        """CPU workers keep their KV pools in /dev/shm: check it can hold them all."""
        from dsbox.engine.model.kv_pool import shared_memory_check

        cpu_budgets = [w.kv_cache_memory for p in plans for w in p.workers
                       if w.device == "cpu"]
        if cpu_budgets:
            shared_memory_check(cpu_budgets)

    # --- requests (any thread) -----------------------------------------------------------
    def _new_seq(self, ids: list[int], params: SamplingParams, arrival: float | None) -> Seq:
        return Seq(next(self._ids), ids, params,
                   Lifecycle(arrival if arrival is not None else time.monotonic()),
                   eos_token_id=self.tokenizer.eos_token_id)

    def submit(self, prompt: Prompt, params: SamplingParams, on_output: OutputCallback, *,
               arrival: float | None = None, tag: str = "") -> int:
        self._check_open()
        text, ids = self.tracker.encode_prompt(prompt)
        seq = self._new_seq(ids, params, arrival)
        self._post(("add", [(seq, text)], on_output, tag))
        return seq.seq_id

    def submit_batch(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams],
                     on_output: OutputCallback, *, tag: str = "") -> list[int]:
        self._check_open()
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        encoded = self.tracker.encode_prompts(prompts)
        now = time.monotonic()
        batch = [(self._new_seq(ids, sp, now), text)
                 for (text, ids), sp in zip(encoded, params, strict=True)]
        self._post(("add", batch, on_output, tag))
        return [seq.seq_id for seq, _ in batch]

    def abort(self, request_id: int) -> None:
        self._post(("abort", request_id))

    def _post(self, msg: tuple) -> None:
        self._inbox.put(msg)
        self._wake.set()
        if self._sleeping and self._results is not None:
            self._results.put(Wake())

    def _check_open(self) -> None:
        if self.loop_error is not None:
            raise RuntimeError(f"engine loop failed: {self.loop_error!r}")
        if self._closed:
            raise RuntimeError("the engine is closed")

    # --- state (any thread) --------------------------------------------------------------
    def _ask_loop(self, kind: str, timeout: float = 10.0):
        """Run ``kind`` in the loop thread (where scheduler state lives) and return it."""
        if self._thread is None or not self._thread.is_alive():
            return self._answer(kind)
        fut: Future = Future()
        self._post((kind, fut))
        return fut.result(timeout)

    def _answer(self, kind: str):
        if kind == "stats":
            return self._stats()
        if kind == "state_sizes":
            return self._state_sizes()
        raise ValueError(kind)

    def info(self) -> EngineInfo:
        return EngineInfo(model=self.spec.name, source=self.source.where,
                          dtype=str(self.dtype).removeprefix("torch."),
                          device=str(self.device), placement=self.placement.format())

    def stats(self) -> EngineStats:
        return self._ask_loop("stats")

    def health(self) -> Health:
        err = None if self.loop_error is None else f"engine loop failed: {self.loop_error!r}"
        if self._closed and err is None:
            err = "the engine is closed"
        rows = tuple((i.index, i.role, i.healthy, i.error) for i in self.instances)
        return Health(err is None and all(i.healthy for i in self.instances), rows, err)

    def finished_since(self, cursor: int = 0) -> tuple[list[RequestRecord], int]:
        return self.flow.finished_since(cursor)

    def steps_since(self, cursor: int = 0) -> tuple[list[StepRecord], int]:
        """The steps every instance ran after ``cursor`` (the last ``STEP_LOG_SIZE``), and
        the cursor to pass next time."""
        return self.steps.since(cursor)

    def pulls_since(self, cursor: int = 0) -> tuple[list[PullRecord], int]:
        """The KV pulls every decode instance completed after ``cursor`` (the last
        ``PULL_LOG_SIZE``), and the cursor to pass next time."""
        return self.pull_log.since(cursor)

    def local_worker(self, index: int = 0) -> DeviceWorker | None:
        """The device worker of instance ``index`` when it runs in this process (tests,
        the profiler); None for worker processes."""
        return getattr(self.instances[index].executor, "worker", None)

    def state_sizes(self) -> dict[str, int]:
        """Sizes of every per-request map in the engine and its workers (0 when idle)."""
        return self._ask_loop("state_sizes", timeout=self.probe_timeout_s + 10.0)

    def _stats(self) -> EngineStats:
        now = time.monotonic()
        return EngineStats(
            time=now, uptime_s=now - self._started,
            instances=tuple(i.stats(now) for i in self.instances),
            num_requests=self.flow.num_requests, finished=dict(self.flow.finished_counts),
            prompt_tokens=self.flow.prompt_tokens,
            generation_tokens=self.flow.generation_tokens, num_unfinished=len(self.tracker),
            aborted_at=dict(self.flow.aborted_at))

    def _state_sizes(self) -> dict[str, int]:
        """Every per-request map: the engine's, each instance's (a failed one's too), and
        each live worker's (asked with a probe). A worker that does not answer is an error,
        never a key left out."""
        sizes = self.flow.state_sizes()
        expected: set[tuple[int, int]] = set()
        self._probes = {}
        probe_id = self._probe_id = next(self._probe_ids)
        try:
            for inst in self.instances:
                for key, n in inst.state_sizes().items():
                    sizes[f"{inst.role}{inst.index}.{key}"] = n
                if inst.healthy:  # a failed instance's workers were killed
                    ranks = inst.executor.probe(probe_id)
                    expected |= {(inst.index, rank) for rank in range(ranks)}
            deadline = time.monotonic() + self.probe_timeout_s
            while not expected <= self._probes.keys() and time.monotonic() < deadline:
                self._drain_results(0.05)
            answers = dict(self._probes)
        finally:
            self._probes = None
        missing = sorted(expected - answers.keys())
        if missing:
            raise RuntimeError(
                "no answer to the state probe from " + ", ".join(
                    f"{self.instances[i].name} rank {r}" for i, r in missing)
                + f" within {self.probe_timeout_s:g} s")
        for (iid, rank), n in sorted(answers.items()):
            sizes[f"worker{iid}.{rank}.requests"] = n
        return sizes

    # --- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        if self.device.type == "cuda":  # Triton launches on the current device
            torch.cuda.set_device(self.setup.run_device)
        try:
            last_health = 0.0
            while not self._stopping.is_set():
                now = time.monotonic()
                self._drain_inbox(now)
                active = 0
                for inst in self.instances:
                    if inst.healthy:
                        active += inst.submit_steps(now)
                        if inst.role == "decode":
                            self.flow.admit_pulls(inst, now)
                        active += len(inst.in_flight)
                active += len(self.flow.pulls)
                self._drain_results(0.002 if active else 0.02, idle=not active)
                if time.monotonic() - last_health > HEALTH_CHECK_S:
                    self._check_health()
                    last_health = time.monotonic()
        except BaseException as exc:  # surface to callers instead of hanging them
            self.loop_error = exc
            logger.error("engine loop failed: %r", exc)
            self._drain_inbox(time.monotonic())
            self.flow.fail_all(f"engine loop failed: {exc!r}")
            raise

    def _drain_inbox(self, now: float) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            kind = msg[0]
            if kind == "add":
                _, batch, cb, tag = msg
                for seq, text in batch:
                    self.flow.add(seq, text, cb, tag, now)
            elif kind == "abort":
                self.flow.abort(msg[1], now)
            else:
                fut: Future = msg[1]
                try:
                    fut.set_result(self._answer(kind))
                except Exception as exc:
                    fut.set_exception(exc)

    def _drain_results(self, timeout: float, idle: bool = False) -> None:
        while self._local_results:
            self._handle(self._local_results.popleft())
        if self._results is None:  # in-process: an idle loop waits for a call
            if idle and self._inbox.empty():
                self._wake.wait(timeout)
            self._wake.clear()
            return
        self._sleeping = idle  # set before looking at the inbox: a call after it wakes us
        try:
            if idle and not self._inbox.empty():
                return
            msg = self._results.get(timeout=timeout)
        except queue.Empty:
            return
        finally:
            self._sleeping = False
        while True:
            self._handle(msg)
            try:
                msg = self._results.get_nowait()
            except queue.Empty:
                return

    def _handle(self, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, StepDone):
            inst = self.instances[msg.instance_id]
            out = inst.in_flight.get(msg.step_id)
            self.flow.step_done(inst, msg, now)
            if out is not None and inst.healthy:
                self.steps.append(inst.step_record(msg.step_id, out, time.monotonic(),
                                                   msg.model_ms))
        elif isinstance(msg, StageFree):
            self.instances[msg.instance_id].stage0_done()
        elif isinstance(msg, PullDone):
            record = self.flow.pull_done(msg, now)
            if record is not None:
                self.pull_log.append(record)
        elif isinstance(msg, ProbeReply):
            if self._probes is not None and msg.probe_id == self._probe_id:
                self._probes[(msg.instance_id, msg.rank)] = msg.num_requests
        elif isinstance(msg, WorkerFailed):
            inst = self.instances[msg.instance_id]
            self.flow.fail_instance(inst, f"worker rank {msg.rank} failed: {msg.message}")
            logger.error("%s rank %d failed: %s\n%s", inst.name, msg.rank, msg.message,
                         msg.detail)

    # --- failures ------------------------------------------------------------------------
    def _check_health(self) -> None:
        for inst in self.instances:
            if not inst.healthy or not inst.executor.sentinels:
                continue
            if wait_sentinels(inst.executor.sentinels, timeout=0):
                codes = inst.executor.exit_codes()
                self.flow.fail_instance(inst, f"worker process exited (exit codes {codes})")

    # --- shutdown ------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop and every worker (decode workers first: a prefill worker owns
        pools they imported); no child process is left behind. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for roles in (("decode",), ("prefill", "colocated")):
            group = [i for i in self.instances if i.role in roles and i.executor is not None]
            for inst in group:
                if inst.healthy:
                    inst.executor.stop()
            for inst in group:
                inst.executor.join(max(0.0, deadline - time.monotonic()))
        if self._launcher is not None:
            self._launcher.kill()

    def __del__(self) -> None:  # last resort; close() is the real way out
        try:
            if not self._closed and self._launcher is not None:
                self._launcher.kill()
        except Exception:
            pass


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
