"""DeviceWorker: what one device holds and does, in a worker process or in this process.

It builds its shard of the model (TP columns/rows and PP layers, applied from outside the
model), sizes and allocates its part of the instance's KV pool, keeps the requests it knows
(the lean step protocol), runs its part of a step, and copies a request's KV in from
prefill pools (pulls). The worker process (:mod:`dsbox.engine.runtime.worker`) wraps it
with torch.distributed and a command loop; the in-process executor calls it directly.
Start-up is in two phases so that every worker sharing a device has loaded its weights
before any of them measures the memory left for KV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dsbox.config import ModelSpec
from dsbox.engine.runtime.kv_transfer import PoolShard, pull_blocks
from dsbox.engine.runtime.step_protocol import StepDelta, WorkerRequests


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs to build its part of an instance (picklable)."""

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
    max_num_seqs: int = 256  # decode batch cap: sizes the preallocated decode workspace

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def pp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def name(self) -> str:
        return f"{self.role}{self.instance_id} rank {self.rank}"

    def shard(self) -> PoolShard:
        from dsbox.engine.runtime.parallel import ParallelContext

        ctx = ParallelContext(self.tp, self.tp_rank, self.pp, self.pp_rank)
        return PoolShard(ctx.layer_range(self.spec.num_layers),
                         ctx.head_range(self.spec.num_heads))


class DeviceWorker:
    """One device's share of an instance. Build, ``kv_capacity()``, ``allocate(n)``, then
    ``step``/``pull``."""

    def __init__(self, ws: WorkerSpec, tp_group=None) -> None:
        from dsbox.engine.model.weights import build_model
        from dsbox.engine.runtime.parallel import ParallelContext, shard_model

        self.ws = ws
        self.device = torch.device(ws.device)
        if self.device.type == "cuda":  # compiled kernels, settled (and checked) now
            from dsbox.kernels import load_kernels

            load_kernels(self.device)
        ctx = ParallelContext(ws.tp, ws.tp_rank, ws.pp, ws.pp_rank, tp_group)
        spec = ws.spec
        transform = None
        if ws.tp * ws.pp > 1:
            def transform(m):
                return shard_model(m, spec, ctx)
        with self._on_device():
            self.model = build_model(spec, ws.dtype, self.device, ws.weights_dir,
                                     dummy_seed=ws.seed, transform=transform)
        self.shard = ws.shard()
        self.requests = WorkerRequests()
        self.pool: torch.Tensor | None = None
        self.runner = None

    def _on_device(self):
        """Launch on this worker's GPU whatever the calling thread's current device."""
        import contextlib

        return (torch.cuda.device(self.device) if self.device.type == "cuda"
                else contextlib.nullcontext())

    @property
    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    @property
    def bytes_per_block(self) -> int:
        from dsbox.engine.model.kv_pool import bytes_per_block

        ws = self.ws
        return bytes_per_block(len(self.shard.layers), len(self.shard.heads),
                               ws.spec.head_dim, ws.block_size, ws.dtype)

    @property
    def total_memory(self) -> int:
        """Bytes of this worker's device (RAM available on the CPU)."""
        from dsbox.engine.model.kv_pool import available_memory

        if self.device.type == "cuda":
            return torch.cuda.get_device_properties(self.device).total_memory
        return available_memory(self.device)

    def kv_capacity(self, budget_bytes: int | None = None) -> int:
        """Blocks this device can hold now (every worker of the device has loaded), within
        ``budget_bytes`` when given."""
        from dsbox.engine.model.kv_pool import kv_budget

        ws = self.ws
        budget = budget_bytes if budget_bytes is not None else kv_budget(
            self.device, ws.kv_cache_memory, ws.kv_cache_fraction)
        return budget // self.bytes_per_block

    def allocate(self, num_blocks: int, shared: bool = False) -> torch.Tensor:
        """Allocate the pool (``shared``: exported to other processes) and the runner."""
        from dsbox.engine.model.attention import make_attention_backend
        from dsbox.engine.model.kv_pool import allocate_pool
        from dsbox.engine.model.runner import ModelRunner

        ws = self.ws
        with self._on_device():
            self.pool = allocate_pool(len(self.shard.layers), num_blocks, ws.block_size,
                                      len(self.shard.heads), ws.spec.head_dim, ws.dtype,
                                      self.device, shared=shared)
            backend = make_attention_backend(ws.attention_backend, self.device)
            self.runner = ModelRunner(self.model, self.pool, ws.block_size, backend,
                                      self.device, seed=ws.seed, layers=self.shard.layers,
                                      max_decode_batch=ws.max_num_seqs)
            self.runner.warmup()  # compile every kernel variant now, not mid-decode
        return self.pool

    @property
    def is_first_stage(self) -> bool:
        return self.runner.is_first

    @property
    def is_last_stage(self) -> bool:
        return self.runner.is_last

    def step(self, delta: StepDelta, hidden_in: torch.Tensor | None = None):
        """Run this worker's part of a step: sampled tokens (and logprobs) on the last
        stage, else the hidden states for the next stage."""
        batch = self.requests.apply(delta)
        with self._on_device():
            return self.runner.execute(batch, hidden_in)

    def pull(self, sources: list[tuple[torch.Tensor, PoolShard]], src_blocks,
             dst_blocks) -> int:
        """Copy a request's KV from prefill pools into this pool; returns bytes copied.
        On CUDA the copy is complete when this returns (prefill may free the blocks)."""
        with self._on_device():
            nbytes = pull_blocks(self.pool, self.shard, list(dst_blocks), sources,
                                 list(src_blocks))
            if self.device.type == "cuda":
                for dev in {self.device} | {p.device for p, _ in sources}:
                    torch.cuda.synchronize(dev)
        return nbytes

