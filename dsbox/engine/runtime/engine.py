"""Engine: serves requests through the instances of a placement (an ``EngineClient``).

A request goes to the least loaded prefill (or colocated) instance; once prefilled it is
offered to the least loaded decode instance, which pulls its KV when it has the blocks
(pull-based: prefill memory is the queue buffer under bursts). The rules are
:mod:`dsbox.engine.core.routing`'s, shared with the simulator. One loop thread drives
everything, so scheduler state needs no locks: callers talk to it through a queue, and
outputs go back through a callback per request.

Instances run in this process (one device each) or in worker processes (one per device),
behind one executor interface (:mod:`executors`); start-up is :mod:`launch`'s. A failing
worker marks its instance unhealthy and ends that instance's requests with an error; the
others carry on. When a request ends, nothing of it is kept but its record in the bounded
finished log.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_sentinels

import torch

from dsbox.client.base import EngineClient, OutputCallback, Prompt
from dsbox.config import EngineConfig
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.request_tracker import RequestTracker
from dsbox.engine.core.routing import finish_handoff, offer_to_decode, route_new
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import Phase, SchedulerConfig
from dsbox.engine.core.sequence import FinishReason
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
    WorkerFailed,
)
from dsbox.engine.runtime.setup import EngineSetup, resolve_setup
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.stats import EngineStats, Health

logger = logging.getLogger("dsbox")
STARTUP_TIMEOUT_S = 600.0
HEALTH_CHECK_S = 0.05
FINISHED_LOG_SIZE = 10_000


@dataclass(slots=True)
class _Pull:
    seq: Seq
    src: Instance
    dst: Instance
    acks_left: int


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
        self._inbox: queue.Queue = queue.Queue()
        self._wake = threading.Event()  # set by every call; the in-process loop sleeps on it
        self._ids = itertools.count()
        self._pull_ids = itertools.count()
        self._closed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_error: BaseException | None = None
        # per request, each emptied when the request ends
        self._callbacks: dict[int, OutputCallback] = {}
        self._home: dict[int, list[Instance]] = {}  # instances holding each request
        self._pulls: dict[int, _Pull] = {}
        self._tags: dict[int, str] = {}
        self._kv_bytes: dict[int, int] = {}
        self._probes: dict[tuple[int, int], int] | None = None
        # counters and the finished log
        self._started = time.monotonic()
        self._num_requests = 0
        self._finished_counts: Counter[str] = Counter()
        self._aborted_at: Counter[str] = Counter()  # by the stage the request was in
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._log_lock = threading.Lock()
        self._finished_log: deque[tuple[int, RequestRecord]] = deque(maxlen=FINISHED_LOG_SIZE)
        self._log_seq = itertools.count(1)
        self.instances = [Instance(i, s.role, s.tp, s.pp, setup.device_names(s))
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

    def stats(self) -> EngineStats:
        return self._ask_loop("stats")

    def health(self) -> Health:
        err = None if self.loop_error is None else f"engine loop failed: {self.loop_error!r}"
        if self._closed and err is None:
            err = "the engine is closed"
        rows = tuple((i.index, i.role, i.healthy, i.error) for i in self.instances)
        return Health(err is None and all(i.healthy for i in self.instances), rows, err)

    def finished_since(self, cursor: int = 0) -> tuple[list[RequestRecord], int]:
        with self._log_lock:
            records = [r for n, r in self._finished_log if n > cursor]
            last = self._finished_log[-1][0] if self._finished_log else cursor
        return records, max(last, cursor)

    def local_worker(self, index: int = 0) -> DeviceWorker | None:
        """The device worker of instance ``index`` when it runs in this process (tests,
        the profiler); None for worker processes."""
        return getattr(self.instances[index].executor, "worker", None)

    def state_sizes(self) -> dict[str, int]:
        """Sizes of every per-request map in the engine and its workers (0 when idle)."""
        return self._ask_loop("state_sizes", timeout=30.0)

    def _stats(self) -> EngineStats:
        now = time.monotonic()
        return EngineStats(
            time=now, uptime_s=now - self._started,
            instances=tuple(i.stats(now) for i in self.instances),
            num_requests=self._num_requests, finished=dict(self._finished_counts),
            prompt_tokens=self._prompt_tokens, generation_tokens=self._generation_tokens,
            num_unfinished=len(self.tracker), aborted_at=dict(self._aborted_at))

    def _state_sizes(self) -> dict[str, int]:
        sizes = {"tracker": len(self.tracker), "callbacks": len(self._callbacks),
                 "home": len(self._home), "pulls": len(self._pulls), "tags": len(self._tags),
                 "kv_bytes": len(self._kv_bytes)}
        expected = 0
        self._probes = {}
        for inst in self.instances:
            if not inst.healthy:
                continue
            for key, n in inst.state_sizes().items():
                sizes[f"{inst.role}{inst.index}.{key}"] = n
            expected += inst.executor.probe()
        deadline = time.monotonic() + 20
        while len(self._probes) < expected and time.monotonic() < deadline:
            self._drain_results(0.05)
        for (iid, rank), n in self._probes.items():
            sizes[f"worker{iid}.{rank}.requests"] = n
        self._probes = None
        return sizes

    # --- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
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
                            self._admit_pulls(inst, now)
                        active += len(inst.in_flight)
                active += len(self._pulls)
                self._drain_results(0.002 if active else 0.02, idle=not active)
                if time.monotonic() - last_health > HEALTH_CHECK_S:
                    self._check_health()
                    last_health = time.monotonic()
        except BaseException as exc:  # surface to callers instead of hanging them
            self.loop_error = exc
            logger.error("engine loop failed: %r", exc)
            self._drain_inbox(time.monotonic(), failing=True)
            for rid in list(self.tracker.requests):
                self._fail(rid, f"engine loop failed: {exc!r}")
            raise

    def _drain_inbox(self, now: float, failing: bool = False) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            kind = msg[0]
            if kind == "add":
                _, batch, cb, tag = msg
                for seq, text in batch:
                    self._add(seq, text, cb, tag, now)
                    if failing:
                        self._fail(seq.seq_id, f"engine loop failed: {self.loop_error!r}")
            elif kind == "abort":
                if msg[1] in self.tracker:
                    self._aborted_at[self._stage_of(msg[1])] += 1
                self._end(msg[1], FinishReason.ABORT, now)
            else:
                fut: Future = msg[1]
                try:
                    fut.set_result(self._answer(kind))
                except Exception as exc:
                    fut.set_exception(exc)

    def _add(self, seq: Seq, text: str | None, cb: OutputCallback, tag: str,
             now: float) -> None:
        self._num_requests += 1
        self.tracker.add(seq, text)
        self._callbacks[seq.seq_id] = cb
        self._tags[seq.seq_id] = tag
        entry = [i for i in self.instances if i.role != "decode" and i.healthy]
        if not entry:
            self._fail(seq.seq_id, "no healthy prefill instance")
            return
        try:
            inst = route_new(seq, entry, now)
        except ValueError as exc:
            self._fail(seq.seq_id, str(exc))
            return
        self._home[seq.seq_id] = [inst]

    def _admit_pulls(self, dec: Instance, now: float) -> None:
        for seq in dec.scheduler.admit(now):
            src = self._home[seq.seq_id][0]
            if not src.healthy:
                self._fail(seq.seq_id, f"{src.name} failed")
                continue
            pid = next(self._pull_ids)
            self._pulls[pid] = _Pull(seq, src, dec, len(dec.devices))
            dec.pull(pid, src, seq.seq_id)

    def _drain_results(self, timeout: float, idle: bool = False) -> None:
        while self._local_results:
            self._handle(self._local_results.popleft())
        if self._results is None:  # in-process: an idle loop waits for a call
            if idle and self._inbox.empty():
                self._wake.wait(timeout)
            self._wake.clear()
            return
        try:
            msg = self._results.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(msg)
            try:
                msg = self._results.get_nowait()
            except queue.Empty:
                return

    def _handle(self, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, StepDone):
            self._step_done(self.instances[msg.instance_id], msg, now)
        elif isinstance(msg, StageFree):
            self.instances[msg.instance_id].stage0_done()
        elif isinstance(msg, PullDone):
            self._pull_done(msg, now)
        elif isinstance(msg, ProbeReply):
            if self._probes is not None:
                self._probes[(msg.instance_id, msg.rank)] = msg.num_requests
        elif isinstance(msg, WorkerFailed):
            inst = self.instances[msg.instance_id]
            self._fail_instance(inst, f"worker rank {msg.rank} failed: {msg.message}")
            logger.error("%s rank %d failed: %s\n%s", inst.name, msg.rank, msg.message,
                         msg.detail)

    def _step_done(self, inst: Instance, msg: StepDone, now: float) -> None:
        out = inst.in_flight.pop(msg.step_id, None)
        if out is None or not inst.healthy:
            return
        if inst.pp == 1:
            inst.stage0_done()
        is_prefill = out.phase is Phase.PREFILL
        seqs = inst.scheduler.seqs
        first = [s.seq_id for s in out.seqs
                 if is_prefill and (seq := seqs.get(s.seq_id)) is not None
                 and seq.num_output_tokens == 0]
        finished = inst.scheduler.on_step_done(out, msg.token_ids, now, msg.logprobs)
        self._generation_tokens += len(out.seqs)
        for sid in first:
            self._prompt_tokens += self.tracker.requests[sid].seq.num_prompt_tokens
        for seq in finished:
            inst.encoder.forget(seq.seq_id)
        for s in out.seqs:
            self._advance(s.seq_id, now)
            if is_prefill and inst.role == "prefill":
                self._offer_to_decode(s.seq_id, now)

    def _offer_to_decode(self, sid: int, now: float) -> None:
        req = self.tracker.requests.get(sid)
        if req is None or req.seq.is_finished:  # finished at its first token
            return
        decoders = [i for i in self.instances if i.role == "decode" and i.healthy]
        if not decoders:
            self._fail(sid, "no healthy decode instance")
            return
        try:
            dec = offer_to_decode(req.seq, decoders, now)
        except ValueError as exc:
            self._fail(sid, str(exc))
            return
        self._home[sid].append(dec)

    def _pull_done(self, msg: PullDone, now: float) -> None:
        pull = self._pulls.get(msg.pull_id)
        if pull is None:
            return
        pull.acks_left -= 1
        sid = pull.seq.seq_id
        pull.dst.count_transfer(msg.nbytes, now, incoming=True)
        pull.src.count_transfer(msg.nbytes, now, incoming=False)
        if sid in self._kv_bytes or sid in self.tracker:
            self._kv_bytes[sid] = self._kv_bytes.get(sid, 0) + msg.nbytes
        if pull.acks_left:
            return
        del self._pulls[msg.pull_id]
        if sid not in self._home:  # ended during the transfer
            self._kv_bytes.pop(sid, None)
            return
        finish_handoff(sid, pull.src.scheduler, pull.dst.scheduler, now)
        pull.src.release(sid)
        self._home[sid] = [pull.dst]

    def _advance(self, sid: int, now: float) -> None:
        out = self.tracker.advance(sid, now, lambda rid, reason: self._end(rid, reason, now,
                                                                            notify=False))
        if out is not None:
            self._emit(out)

    def _stage_of(self, sid: int) -> str:
        """Where a live request is: queued, prefill (in a step), prefilled (waiting to be
        pulled), transfer, decode."""
        seq = self.tracker.requests[sid].seq
        if any(p.seq is seq for p in self._pulls.values()):
            return "transfer"
        status = seq.status.value
        if status == "waiting":
            busy = any(sid in h.busy_seq_ids() for h in self._home.get(sid, ()))
            return "prefill" if busy else "queued"
        if status in ("prefilled", "pending_pull"):
            return "prefilled"
        return "decode"

    def _end(self, sid: int, reason: FinishReason, now: float, notify: bool = True) -> None:
        """End a request in every instance that holds it (frees its blocks everywhere)."""
        for inst in self._home.get(sid, ()):
            inst.finish(sid, reason, now)
        if notify and sid in self.tracker:
            seq = self.tracker.requests[sid].seq
            if not seq.is_finished:  # never reached a scheduler
                seq.status = seq.status.FINISHED
                seq.finish_reason = reason
                seq.lifecycle.finish = now
            self._emit(self.tracker.output(sid))

    def _fail(self, sid: int, message: str) -> None:
        if sid not in self.tracker:
            return
        self.tracker.fail(sid, message)
        self._end(sid, FinishReason.ERROR, time.monotonic())

    def _emit(self, out: RequestOutput) -> None:
        """Hand an output to its caller; a final one also ends the request's state."""
        sid = out.request_id
        cb = self._callbacks.get(sid)
        if out.finished:
            self._forget_request(out)
        if cb is not None:
            try:
                cb(out)
            except Exception as exc:  # a caller's callback must never stop the loop
                logger.warning("output callback of request %d failed: %r", sid, exc)

    def _forget_request(self, out: RequestOutput) -> None:
        sid = out.request_id
        self._callbacks.pop(sid, None)
        for inst in self._home.pop(sid, ()):
            inst.finish(sid, FinishReason(out.finish_reason), out.lifecycle.finish or 0.0)
        reason = out.finish_reason or "error"
        self._finished_counts[reason] += 1
        record = RequestRecord(sid, len(out.prompt_token_ids), len(out.token_ids), reason,
                               out.lifecycle, self._tags.pop(sid, ""),
                               self._kv_bytes.pop(sid, 0), out.error)
        with self._log_lock:
            self._finished_log.append((next(self._log_seq), record))

    # --- failures ------------------------------------------------------------------------
    def _check_health(self) -> None:
        for inst in self.instances:
            if not inst.healthy or not inst.executor.sentinels:
                continue
            if wait_sentinels(inst.executor.sentinels, timeout=0):
                codes = inst.executor.exit_codes()
                self._fail_instance(inst, f"worker process exited (exit codes {codes})")

    def _fail_instance(self, inst: Instance, message: str) -> None:
        if not inst.healthy:
            return
        inst.healthy = False
        inst.error = message
        inst.in_flight.clear()
        victims = [sid for sid, homes in self._home.items() if inst in homes]
        for pid, pull in list(self._pulls.items()):
            if inst in (pull.src, pull.dst):
                del self._pulls[pid]
                victims.append(pull.seq.seq_id)
        for sid in dict.fromkeys(victims):
            self._fail(sid, f"{inst.name} unhealthy: {message.splitlines()[0]}")
        inst.executor.kill()  # peers may be stuck in a collective with the dead one

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
