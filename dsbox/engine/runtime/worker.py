"""Worker process: one per device (a GPU, or a CPU slot standing in for one).

A worker belongs to one instance (a TP x PP group with its own torch.distributed world:
NCCL on CUDA, gloo on CPU). It builds its shard of the model, sizes and allocates its KV
pool, shares the pool with the decode workers that will pull from it, then serves commands
from its inbox in order: run a step (its stage of it), pull a request's KV, stop.
Results go to the controller's queue; only rank 0 of the last stage reports a step, and with
PP rank 0 of the first stage reports when a step has left it (the next one may enter).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from dsbox.config import ModelSpec
from dsbox.engine.core.step_batch import StepBatch
from dsbox.engine.runtime.kv_transfer import PoolShard, pull_blocks


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    instance_id: int
    role: str
    rank: int            # rank in the instance's world: stage * tp + tp_rank
    tp: int
    pp: int
    device: str          # "cuda:i" or "cpu"
    spec: ModelSpec
    weights_dir: Path | None
    dtype: torch.dtype
    seed: int
    block_size: int
    kv_cache_memory: int | None
    kv_cache_fraction: float
    attention_backend: str | None
    master_port: int
    num_threads: int
    share_device: int = 1  # workers sharing this device (splits the free-memory budget)

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def pp_rank(self) -> int:
        return self.rank // self.tp

    def shard(self) -> PoolShard:
        from dsbox.engine.runtime.parallel import ParallelContext

        ctx = ParallelContext(self.tp, self.tp_rank, self.pp, self.pp_rank)
        return PoolShard(ctx.layer_range(self.spec.num_layers),
                         ctx.head_range(self.spec.num_heads))


@dataclass(frozen=True, slots=True)
class Step:
    step_id: int
    batch: StepBatch


@dataclass(frozen=True, slots=True)
class Pull:
    pull_id: int
    src_instance: int
    src_blocks: list[int]
    dst_blocks: list[int]


@dataclass(frozen=True, slots=True)
class Stop:
    pass


def _init_distributed(ws: WorkerSpec):
    """The instance's world and this stage's TP group (None when the instance is 1 GPU)."""
    world = ws.tp * ws.pp
    if world == 1:
        return None
    import torch.distributed as dist

    backend = "nccl" if ws.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{ws.master_port}",
                            world_size=world, rank=ws.rank)
    tp_group = None
    for stage in range(ws.pp):  # every rank creates every group, in the same order
        g = dist.new_group(list(range(stage * ws.tp, (stage + 1) * ws.tp)))
        if stage == ws.pp_rank:
            tp_group = g
    return tp_group


def _exit_with_parent(parent_pid: int) -> None:
    """Die when the controller's process is gone, however it went (even SIGKILL)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(ws: WorkerSpec, inbox, results, export_queues, import_queues,
                parent_pid: int) -> None:
    """Process entry point. ``export_queues``: one queue per decode worker that pulls from
    this one (the pool is put there once). ``import_queues``: {(instance, rank): queue} of
    the prefill workers this one pulls from."""
    _exit_with_parent(parent_pid)
    try:
        _serve(ws, inbox, results, export_queues, import_queues)
    except BaseException as exc:  # report, then die: the controller marks us unhealthy
        results.put(("error", ws.instance_id, ws.rank,
                     f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None


def _serve(ws: WorkerSpec, inbox, results, export_queues, import_queues) -> None:
    from dsbox.engine.model.attention import make_attention_backend
    from dsbox.engine.model.kv_pool import allocate_pool, bytes_per_block, kv_budget
    from dsbox.engine.model.runner import ModelRunner
    from dsbox.engine.model.weights import build_model
    from dsbox.engine.runtime.parallel import ParallelContext, shard_model

    torch.set_num_threads(ws.num_threads)
    device = torch.device(ws.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tp_group = _init_distributed(ws)
    ctx = ParallelContext(ws.tp, ws.tp_rank, ws.pp, ws.pp_rank, tp_group)
    spec = ws.spec
    model = build_model(spec, ws.dtype, device, ws.weights_dir, dummy_seed=ws.seed,
                        transform=lambda m: shard_model(m, spec, ctx))
    shard = ws.shard()
    per_block = bytes_per_block(len(shard.layers), len(shard.heads), spec.head_dim,
                                ws.block_size, ws.dtype)
    budget = kv_budget(device, ws.kv_cache_memory, ws.kv_cache_fraction / ws.share_device)
    results.put(("ready", ws.instance_id, ws.rank, budget // per_block))

    # the controller answers with the instance-wide block count
    msg = inbox.get()
    num_blocks = msg[1]
    pool = allocate_pool(len(shard.layers), num_blocks, ws.block_size, len(shard.heads),
                         spec.head_dim, ws.dtype, device, shared=True)
    for q in export_queues:
        q.put((ws.instance_id, ws.rank, shard, pool))
    sources: dict[int, list[tuple[torch.Tensor, PoolShard]]] = {}
    for (inst, _rank), q in import_queues.items():
        _i, _r, src_shard, src_pool = q.get()
        sources.setdefault(inst, []).append((src_pool, src_shard))

    backend = make_attention_backend(ws.attention_backend, device)
    runner = ModelRunner(model, pool, ws.block_size, backend, device, seed=ws.seed,
                         layers=shard.layers)
    reports = runner.is_last and ws.tp_rank == 0
    reports_stage0 = ws.pp > 1 and runner.is_first and ws.tp_rank == 0
    results.put(("started", ws.instance_id, ws.rank, os.getpid()))
    while True:
        cmd = inbox.get()
        if isinstance(cmd, Stop):
            break
        if isinstance(cmd, Step):
            out = _run_step(ws, runner, cmd.batch, spec)
            if reports_stage0:
                results.put(("stage0", ws.instance_id, cmd.step_id))
            if reports:
                results.put(("step", ws.instance_id, cmd.step_id, out))
        elif isinstance(cmd, Pull):
            nbytes = pull_blocks(pool, shard, cmd.dst_blocks, sources[cmd.src_instance],
                                 cmd.src_blocks)
            if device.type == "cuda":  # the copy is done before prefill may free the blocks
                for dev in {device} | {p.device for p, _ in sources[cmd.src_instance]}:
                    torch.cuda.synchronize(dev)
            results.put(("pulled", ws.instance_id, ws.rank, cmd.pull_id, nbytes))
    _shutdown_distributed(ws)


def _run_step(ws: WorkerSpec, runner, batch: StepBatch, spec: ModelSpec):
    if ws.pp == 1:
        return runner.execute(batch)
    import torch.distributed as dist

    hidden_in = None
    if not runner.is_first:
        hidden_in = torch.empty(len(batch.token_ids), spec.hidden_size, dtype=ws.dtype,
                                device=runner.device)
        dist.recv(hidden_in, src=ws.rank - ws.tp)
    out = runner.execute(batch, hidden_in)
    if not runner.is_last:
        dist.send(out.contiguous(), dst=ws.rank + ws.tp)
        return None
    return out


def _shutdown_distributed(ws: WorkerSpec) -> None:
    if ws.tp * ws.pp > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
