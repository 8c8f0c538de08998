"""The worker process: one per device (a GPU, or a CPU slot standing in for one).

It joins its instance's torch.distributed world (NCCL on CUDA, gloo on CPU), builds a
:class:`DeviceWorker`, follows the start-up handshake of :mod:`messages` (loaded, measure,
allocate, exchange pools with the decode workers that pull from it), then serves commands
from its inbox in order. With PP it receives the previous stage's hidden states and sends
its own to the next stage; only TP rank 0 of the last stage reports a step, and TP rank 0
of the first stage reports when a step has left it. Any exception is reported as one
``WorkerFailed`` and ends the process; a worker also ends when the engine's process is gone.
"""

from __future__ import annotations

import os
import threading
import time
import traceback

import torch

from dsbox.engine.runtime.device_worker import DeviceWorker, WorkerSpec
from dsbox.engine.runtime.messages import (
    AllocateKV,
    Forget,
    KVCapacity,
    MeasureKV,
    Probe,
    ProbeReply,
    PullDone,
    PullKV,
    RunStep,
    StageFree,
    StepDone,
    Stop,
    WorkerFailed,
    WorkerLoaded,
    WorkerStarted,
)


def _init_distributed(ws: WorkerSpec):
    """The instance's world and this stage's TP group (None when the instance is 1 device)."""
    if ws.tp * ws.pp == 1:
        return None
    import torch.distributed as dist

    kwargs = {}
    if ws.device.startswith("cuda"):  # NCCL's buffers exist before the KV pool is sized
        kwargs["device_id"] = torch.device(ws.device)
    dist.init_process_group("nccl" if ws.device.startswith("cuda") else "gloo",
                            init_method=f"tcp://127.0.0.1:{ws.master_port}",
                            world_size=ws.tp * ws.pp, rank=ws.rank, **kwargs)
    tp_group = None
    for stage in range(ws.pp):  # every rank creates every group, in the same order
        g = dist.new_group(list(range(stage * ws.tp, (stage + 1) * ws.tp)))
        if stage == ws.pp_rank:
            tp_group = g
    return tp_group


def _exit_with_parent(parent_pid: int) -> None:
    """Die when the engine's process is gone, however it went (even SIGKILL)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _expect(inbox, kind: type):
    msg = inbox.get()
    if isinstance(msg, Stop):
        raise SystemExit(0)
    if not isinstance(msg, kind):
        raise RuntimeError(f"worker expected {kind.__name__}, got {type(msg).__name__}")
    return msg


def worker_main(ws: WorkerSpec, inbox, results, export_queues, import_queues,
                parent_pid: int) -> None:
    """Process entry point. ``export_queues``: one queue per decode worker that pulls from
    this one (the pool is put there once). ``import_queues``: {(instance, rank): queue} of
    the prefill workers this one pulls from."""
    _exit_with_parent(parent_pid)
    try:
        _serve(ws, inbox, results, export_queues, import_queues)
    except SystemExit:
        raise
    except BaseException as exc:  # report, then die: the engine marks the instance unhealthy
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        results.put(WorkerFailed(ws.instance_id, ws.rank, first, traceback.format_exc()))
        raise SystemExit(1) from None


def _serve(ws: WorkerSpec, inbox, results, export_queues, import_queues) -> None:
    torch.set_num_threads(ws.num_threads)
    if ws.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(ws.device))
    tp_group = _init_distributed(ws)
    worker = DeviceWorker(ws, tp_group)
    results.put(WorkerLoaded(ws.instance_id, ws.rank, worker.weight_bytes,
                             worker.total_memory))
    measure = _expect(inbox, MeasureKV)
    results.put(KVCapacity(ws.instance_id, ws.rank, worker.kv_capacity(measure.budget_bytes),
                           worker.bytes_per_block))
    alloc = _expect(inbox, AllocateKV)
    pool = worker.allocate(alloc.num_blocks, shared=True)
    for q in export_queues:
        q.put((ws.instance_id, ws.rank, worker.shard, pool))
    sources: dict[int, list] = {}
    for (inst, _rank), q in import_queues.items():
        _i, _r, src_shard, src_pool = q.get()
        sources.setdefault(inst, []).append((src_pool, src_shard))
    reports = worker.is_last_stage and ws.tp_rank == 0
    reports_stage0 = ws.pp > 1 and worker.is_first_stage and ws.tp_rank == 0
    results.put(WorkerStarted(ws.instance_id, ws.rank, os.getpid()))
    while True:
        cmd = inbox.get()
        if isinstance(cmd, RunStep):
            start = time.perf_counter()
            out = _run_step(ws, worker, cmd)
            if reports_stage0:
                results.put(StageFree(ws.instance_id, cmd.step_id))
            if reports:
                tokens, logprobs = out
                model_ms = (time.perf_counter() - start) * 1e3
                results.put(StepDone(ws.instance_id, cmd.step_id, tokens, logprobs, model_ms))
        elif isinstance(cmd, PullKV):
            start = time.monotonic()
            nbytes = worker.pull(sources[cmd.src_instance], cmd.src_blocks, cmd.dst_blocks)
            results.put(PullDone(ws.instance_id, ws.rank, cmd.pull_id, nbytes, start,
                                 time.monotonic()))
        elif isinstance(cmd, Forget):
            worker.requests.drop(cmd.seq_ids)
        elif isinstance(cmd, Probe):
            results.put(ProbeReply(ws.instance_id, ws.rank, len(worker.requests),
                                   cmd.probe_id))
        elif isinstance(cmd, Stop):
            break
        else:
            raise RuntimeError(f"unknown command {type(cmd).__name__}")
    _shutdown_distributed(ws)


def _run_step(ws: WorkerSpec, worker: DeviceWorker, cmd: RunStep):
    if ws.pp == 1:
        return worker.step(cmd.delta)
    import torch.distributed as dist

    hidden_in = None
    if not worker.is_first_stage:
        hidden_in = torch.empty(len(cmd.delta.token_ids), ws.spec.hidden_size,
                                dtype=ws.dtype, device=worker.device)
        dist.recv(hidden_in, src=ws.rank - ws.tp)
    out = worker.step(cmd.delta, hidden_in)
    if not worker.is_last_stage:
        dist.send(out.contiguous(), dst=ws.rank + ws.tp)
        return None
    return out


def _shutdown_distributed(ws: WorkerSpec) -> None:
    if ws.tp * ws.pp > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
