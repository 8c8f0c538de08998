"""Controller: owns the instances of a placement and routes every request through them.

A request goes to the least-loaded healthy prefill (or colocated) instance; once prefilled
it is offered to the decode instance with the most room, which pulls its KV when it has the
blocks (pull-based: prefill memory is the queue buffer under bursts). Tokens stream back
through a callback per request (``stream`` wraps it as an async iterator). One loop thread
drives everything, so scheduler state needs no locks; callers talk to it via a queue.

Workers are processes (one per device), forked from a forkserver that imported torch once;
a dead or failing worker marks its instance unhealthy and ends that instance's requests with
an error, and the others carry on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_sentinels

import torch
import torch.multiprocessing as tmp

from dsbox.config import EngineConfig
from dsbox.config.placement import InstanceSpec, Placement
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.request_tracker import RequestTracker
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import Phase, SchedulerConfig
from dsbox.engine.core.sequence import FinishReason, Sequence
from dsbox.engine.model.source import resolve_model
from dsbox.engine.runtime.instance import Instance, InstanceStatus
from dsbox.engine.runtime.llm_engine import load_source_tokenizer, resolve_device, resolve_dtype
from dsbox.engine.runtime.worker import Stop, WorkerSpec, worker_main
from dsbox.metrics.lifecycle import Lifecycle

logger = logging.getLogger(__name__)
OutputCallback = Callable[[RequestOutput], None]
STARTUP_TIMEOUT_S = 600.0
HEALTH_CHECK_S = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class _Pull:
    seq: Sequence
    src: Instance
    dst: Instance
    acks_left: int


class Controller:
    """Start the workers of ``placement`` (text form or Placement) and serve requests.

    On CUDA, device ids are GPU indices; ``share_devices`` lets several instances share
    fewer GPUs (ids taken modulo the GPU count), e.g. a prefill and a decode worker on one
    GPU. On CPU every device id is a CPU slot (a process with its own KV pool)."""

    def __init__(self, config: EngineConfig, placement: Placement | str,
                 startup_timeout: float = STARTUP_TIMEOUT_S,
                 share_devices: bool = False) -> None:
        if isinstance(placement, str):
            placement = Placement.parse(placement)
        self.placement = placement.assigned()
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.source = resolve_model(config.model, config.dummy_weights)
        self.spec = self.source.spec
        self.tokenizer = load_source_tokenizer(self.source)
        self.max_model_len = min(config.max_model_len or self.spec.max_position_embeddings,
                                 self.spec.max_position_embeddings)
        self.tracker = RequestTracker(self.tokenizer, self.spec, self.max_model_len)
        self.instances = self._make_instances(self.placement.expanded(), share_devices)
        self._callbacks: dict[int, OutputCallback] = {}
        self._home: dict[int, list[Instance]] = {}  # instances holding each request
        self._inbox: queue.Queue = queue.Queue()
        self._ids = itertools.count()
        self._pull_ids = itertools.count()
        self._pulls: dict[int, _Pull] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.loop_error: BaseException | None = None
        self.transfer_bytes = 0
        self.abort_stages: Counter[str] = Counter()
        try:
            self._start(startup_timeout)
        except BaseException:
            self._kill_all()
            raise

    # --- start-up ------------------------------------------------------------------------
    def _make_instances(self, plans: list[InstanceSpec], share: bool) -> list[Instance]:
        from dsbox.engine.runtime.parallel import check_divisible

        cfg = self.config
        cuda = self.device.type == "cuda"
        if cuda:
            count = torch.cuda.device_count()
            dtype_name = str(self.dtype).removeprefix("torch.")
            self.placement.validate_for(
                self.spec, torch.cuda.get_device_properties(0).total_memory,
                num_devices=None if share else count, dtype=dtype_name,
                min_kv_tokens=self.config.block_size, memory_utilization=0.95)
            plans = [replace(p, devices=tuple(d % count for d in p.devices)) for p in plans]
        total_workers = sum(p.tp * p.pp for p in plans)
        threads = max(1, (os.cpu_count() or 1) // total_workers)
        uses: dict[int, int] = {}
        for p in plans:
            for d in p.devices:
                uses[d] = uses.get(d, 0) + 1
        kv_memory = {"prefill": cfg.kv_cache_memory, "colocated": cfg.kv_cache_memory,
                     "decode": cfg.kv_cache_memory_decode or cfg.kv_cache_memory}
        instances = []
        for iid, p in enumerate(plans):
            check_divisible(self.spec, p.tp, p.pp)
            port = _free_port()
            workers = [WorkerSpec(
                instance_id=iid, role=p.role, rank=r, tp=p.tp, pp=p.pp,
                device=f"cuda:{d}" if cuda else "cpu", spec=self.spec,
                weights_dir=None if cfg.dummy_weights else self.source.weights_dir,
                dtype=self.dtype, seed=cfg.seed, block_size=cfg.block_size,
                kv_cache_memory=kv_memory[p.role], kv_cache_fraction=cfg.kv_cache_fraction,
                attention_backend=cfg.attention_backend, master_port=port,
                num_threads=threads, share_device=uses[d] if cuda else 1,
            ) for r, d in enumerate(p.devices)]
            instances.append(Instance(iid, p.role, p.tp, p.pp, workers))
        return instances

    def _start(self, timeout: float) -> None:
        # forkserver: workers fork from one server that imported torch and the worker code
        # once (fast start-up); like spawn, no CUDA state is ever inherited
        ctx = tmp.get_context("forkserver")
        ctx.set_forkserver_preload(["dsbox.engine.runtime.worker", "dsbox.engine.model.runner",
                                    "dsbox.engine.model.weights", "dsbox.engine.runtime.parallel"])
        self._results = ctx.Queue()
        prefill = [i for i in self.instances if i.role == "prefill"]
        decode = [i for i in self.instances if i.role == "decode"]
        # one queue per (prefill worker, decode worker): the prefill pool is shared once
        links = {(p.instance_id, pw.rank, d.instance_id, dw.rank): ctx.Queue()
                 for p in prefill for pw in p.workers for d in decode for dw in d.workers}
        for inst in self.instances:
            for w in inst.workers:
                exports = [q for (pi, pr, _di, _dr), q in links.items()
                           if pi == inst.instance_id and pr == w.rank]
                imports = {(pi, pr): q for (pi, pr, di, dr), q in links.items()
                           if di == inst.instance_id and dr == w.rank}
                inbox = ctx.Queue()
                proc = ctx.Process(target=worker_main, name=f"dsbox-{inst.role}{inst.instance_id}"
                                   f"-rank{w.rank}", args=(w, inbox, self._results, exports,
                                                           imports, os.getpid()), daemon=True)
                proc.start()
                inst.inboxes.append(inbox)
                inst.processes.append(proc)
        ready = self._collect("ready", timeout)
        sched_cfg = SchedulerConfig(self.config.max_num_batched_tokens, self.config.max_num_seqs)
        for inst in self.instances:
            num_blocks = min(ready[(inst.instance_id, w.rank)] for w in inst.workers)
            if num_blocks < 1:
                raise RuntimeError(f"instance {inst.instance_id} ({inst.role}): the KV budget "
                                   "holds no block; raise kv_cache_memory")
            inst.make_scheduler(num_blocks, self.config.block_size, sched_cfg)
            inst.send_all(("alloc", num_blocks))
            # a sequence never outgrows a pool, so a preempted one can always come back
            self.max_model_len = min(self.max_model_len, num_blocks * self.config.block_size)
        self.tracker.max_model_len = self.max_model_len
        self._collect("started", timeout)
        self._thread = threading.Thread(target=self._loop, name="dsbox-controller",
                                        daemon=True)
        self._thread.start()

    def _collect(self, kind: str, timeout: float) -> dict[tuple[int, int], int]:
        """Wait for message ``kind`` from every worker; raise on an error or a death."""
        want = {(i.instance_id, w.rank) for i in self.instances for w in i.workers}
        got: dict[tuple[int, int], int] = {}
        deadline = time.monotonic() + timeout
        while want - set(got):
            try:
                msg = self._results.get(timeout=0.2)
            except queue.Empty:
                for inst in self.instances:
                    for w, p in zip(inst.workers, inst.processes, strict=True):
                        if not p.is_alive():
                            raise RuntimeError(f"worker {inst.role}{inst.instance_id} rank "
                                               f"{w.rank} died during start-up "
                                               f"(exit code {p.exitcode})") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers not {kind} after {timeout:.0f} s") from None
                continue
            if msg[0] == "error":
                raise RuntimeError(f"worker {msg[1]} rank {msg[2]} failed during start-up:\n"
                                   f"{msg[3]}")
            if msg[0] == kind:
                got[(msg[1], msg[2])] = msg[3]
        return got

    # --- public API (any thread) ---------------------------------------------------------
    def submit(self, prompt: str | list[int], params: SamplingParams,
               on_output: OutputCallback, arrival: float | None = None) -> int:
        """Queue a request; ``on_output`` gets every update (from the loop thread). Bad
        input raises ValueError here, before anything is queued."""
        text, ids = self.tracker.encode_prompt(prompt)
        return self._submit_encoded(text, ids, params, on_output, arrival)

    def _submit_encoded(self, text: str | None, ids: list[int], params: SamplingParams,
                        on_output: OutputCallback, arrival: float | None = None) -> int:
        self._check_open()
        rid = next(self._ids)
        seq = Sequence(rid, ids, params,
                       Lifecycle(arrival if arrival is not None else time.monotonic()),
                       eos_token_id=self.tokenizer.eos_token_id)
        self._inbox.put(("add", seq, text, on_output))
        return rid

    def abort(self, request_id: int) -> None:
        self._inbox.put(("abort", request_id))

    async def stream(self, prompt: str | list[int], params: SamplingParams
                     ) -> AsyncIterator[RequestOutput]:
        """Async iterator over a request's outputs; cancelling it aborts the request."""
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        def push(out: RequestOutput) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(outputs.put_nowait, out)

        rid = self.submit(prompt, params, push)
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.abort(rid)

    def generate(self, prompts: list, params: SamplingParams | list[SamplingParams]
                 ) -> list[RequestOutput]:
        """Blocking batch generation (prompts validated before any is queued)."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        encoded = self.tracker.encode_prompts(prompts)
        done: dict[int, RequestOutput] = {}
        cv = threading.Condition()

        def on_output(out: RequestOutput) -> None:
            if out.finished:
                with cv:
                    done[out.request_id] = out
                    cv.notify()

        rids = [self._submit_encoded(text, ids, sp, on_output)
                for (text, ids), sp in zip(encoded, params, strict=True)]
        with cv:
            while len(done) < len(rids):
                self._check_open()
                cv.wait(timeout=0.5)
        return [done[r] for r in rids]

    def status(self) -> list[InstanceStatus]:
        return [i.status() for i in self.instances]

    def _check_open(self) -> None:
        if self.loop_error is not None:
            raise RuntimeError(f"controller loop failed: {self.loop_error!r}")
        if self._closed:
            raise RuntimeError("controller is shut down")

    # --- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
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
                self._drain_results(timeout=0.002 if active else 0.02)
                if time.monotonic() - last_health > HEALTH_CHECK_S:
                    self._check_health()
                    last_health = time.monotonic()
        except BaseException as exc:  # surface to callers instead of hanging them
            self.loop_error = exc
            for rid in list(self.tracker.requests):
                self._fail(rid, f"controller loop failed: {exc!r}")
            raise

    def _drain_inbox(self, now: float) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if msg[0] == "add":
                _, seq, text, cb = msg
                self._add(seq, text, cb, now)
            elif msg[0] == "abort":
                if msg[1] in self.tracker:
                    self.abort_stages[self._stage_of(msg[1])] += 1
                self._end(msg[1], FinishReason.ABORT, now)

    def _add(self, seq: Sequence, text: str | None, cb: OutputCallback, now: float) -> None:
        self.tracker.add(seq, text)
        self._callbacks[seq.seq_id] = cb
        entry = [i for i in self.instances if i.role in ("prefill", "colocated") and i.healthy]
        if not entry:
            self._fail(seq.seq_id, "no healthy prefill instance")
            return
        # least loaded: fewest prompt tokens queued, then most free blocks
        inst = min(entry, key=lambda i: (sum(s.num_tokens for s in i.scheduler.waiting),
                                         -i.scheduler.block_manager.num_free_blocks))
        try:
            inst.scheduler.add(seq, now)
        except ValueError as exc:
            self._fail(seq.seq_id, str(exc))
            return
        self._home[seq.seq_id] = [inst]

    def _admit_pulls(self, dec: Instance, now: float) -> None:
        for seq in dec.scheduler.admit(now):
            src = self._home[seq.seq_id][0]
            if not src.healthy:
                self._fail(seq.seq_id, f"prefill instance {src.instance_id} failed")
                continue
            pid = next(self._pull_ids)
            self._pulls[pid] = _Pull(seq, src, dec, len(dec.workers))
            dec.pull(pid, src.instance_id, src.scheduler.block_manager.block_table(seq.seq_id),
                     dec.scheduler.block_manager.block_table(seq.seq_id))

    def _drain_results(self, timeout: float) -> None:
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

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        now = time.monotonic()
        if kind == "step":
            _, iid, step_id, tokens = msg
            inst = self.instances[iid]
            out = inst.in_flight.pop(step_id, None)
            if out is None or not inst.healthy:
                return
            if inst.pp == 1:
                inst.stage0_done()
            inst.scheduler.on_step_done(out, tokens, now)
            for s in out.seqs:
                self._advance(s.seq_id, now)
                if out.phase is Phase.PREFILL and inst.role == "prefill":
                    self._offer_to_decode(s.seq_id, now)
        elif kind == "stage0":
            self.instances[msg[1]].stage0_done()
        elif kind == "pulled":
            _, iid, _rank, pid, nbytes = msg
            pull = self._pulls.get(pid)
            if pull is None:
                return
            pull.acks_left -= 1
            self.transfer_bytes += nbytes
            if pull.acks_left == 0:
                del self._pulls[pid]
                sid = pull.seq.seq_id
                pull.dst.scheduler.mark_pulled(sid, now)
                pull.src.scheduler.release(sid)
                if sid in self._home:
                    self._home[sid] = [pull.dst]
        elif kind == "error":
            _, iid, rank, text = msg
            self._fail_instance(self.instances[iid], f"worker rank {rank} failed: {text}")

    def _offer_to_decode(self, sid: int, now: float) -> None:
        seq = self.tracker.requests.get(sid)
        if seq is None:  # finished at its first token
            return
        seq = seq.seq
        decode = [i for i in self.instances if i.role == "decode" and i.healthy]
        if not decode:
            self._fail(sid, "no healthy decode instance")
            return
        dec = max(decode, key=lambda i: i.scheduler.block_manager.num_free_blocks
                  - sum(s.num_tokens for s in i.scheduler.pending) // self.config.block_size)
        try:
            dec.scheduler.add_pending(seq, now)
        except ValueError as exc:
            self._fail(sid, str(exc))
            return
        self._home[sid].append(dec)

    def _advance(self, sid: int, now: float) -> None:
        out = self.tracker.advance(sid, now, lambda rid, reason: self._end(rid, reason, now,
                                                                            notify=False))
        if out is not None:
            self._notify(out)

    def _stage_of(self, sid: int) -> str:
        """Where a request is now: queued, prefill, prefilled (waiting to be pulled),
        transfer, decode (or done)."""
        seq = self.tracker.requests[sid].seq
        homes = self._home.get(sid, [])
        if seq.is_finished or not homes:
            return "done"
        if any(p.seq is seq for p in self._pulls.values()):
            return "transfer"
        busy = any(sid in h.busy_seq_ids() for h in homes)
        status = seq.status.value
        if status == "waiting":
            return "prefill" if busy else "queued"
        if status in ("prefilled", "pending_pull"):
            return "prefilled"
        return "decode"

    def _end(self, sid: int, reason: FinishReason, now: float, notify: bool = True) -> None:
        """End a request in every instance that holds it (frees its blocks everywhere)."""
        for inst in self._home.pop(sid, ()):
            inst.scheduler.finish(sid, reason, now)
        if notify and sid in self.tracker:
            req = self.tracker.requests[sid]
            if not req.seq.is_finished:  # never reached a scheduler
                req.seq.status = req.seq.status.FINISHED
                req.seq.finish_reason = reason
                req.seq.lifecycle.finish = now
            self._notify(self.tracker.output(sid))

    def _fail(self, sid: int, message: str) -> None:
        if sid not in self.tracker:
            return
        self.tracker.fail(sid, message)
        self._end(sid, FinishReason.ERROR, time.monotonic())

    def _notify(self, out: RequestOutput) -> None:
        cb = self._callbacks.get(out.request_id)
        if out.finished:
            self._callbacks.pop(out.request_id, None)
        if cb is not None:
            try:
                cb(out)
            except Exception as exc:  # a caller's callback must never stop the loop
                logger.warning("output callback of request %d failed: %r", out.request_id, exc)

    # --- failures ------------------------------------------------------------------------
    def _check_health(self) -> None:
        for inst in self.instances:
            if not inst.healthy:
                continue
            dead = wait_sentinels([p.sentinel for p in inst.processes], timeout=0)
            if dead:
                codes = [p.exitcode for p in inst.processes if not p.is_alive()]
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
            self._fail(sid, f"instance {inst.instance_id} ({inst.role}) unhealthy: "
                            f"{message.splitlines()[0]}")
        for p in inst.processes:  # peers may be stuck in a collective with the dead one
            if p.is_alive():
                p.kill()

    # --- shutdown ------------------------------------------------------------------------
    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the loop and every worker; no child process is left behind. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for inst in self.instances:
            if inst.healthy:
                for q in inst.inboxes:
                    try:
                        q.put(Stop())
                    except (ValueError, OSError):
                        pass
        deadline = time.monotonic() + timeout
        for inst in self.instances:
            for p in inst.processes:
                p.join(max(0.0, deadline - time.monotonic()))
        self._kill_all()

    def _kill_all(self) -> None:
        for inst in self.instances:
            for p in inst.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        self._closed = True
        self._stopping.set()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self) -> None:  # last resort; shutdown() is the real way out
        try:
            if not self._closed:
                self._kill_all()
        except Exception:
            pass

