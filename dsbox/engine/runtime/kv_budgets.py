"""How many bytes of KV pool each worker gets, decided once every worker has loaded.

On CUDA (unless ``kv_cache_memory`` fixes it) the pools are sized from each device's total
memory less the weights of every worker on it, a reserve per worker, and the CUDA contexts
that decode processes on other GPUs open there when they import a prefill pool
(:func:`dsbox.engine.model.kv_pool.kv_pool_budgets`): pure arithmetic on totals, so workers
sharing a GPU can never plan more than it has, whoever loaded first. Elsewhere (CPU, or an
explicit budget) each worker sizes its pool itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dsbox.engine.model.kv_pool import kv_pool_budgets
from dsbox.engine.runtime.launch import InstancePlan

PEER_CONTEXT_BYTES = 512 << 20  # a CUDA context a process opens on another GPU (~0.3-0.5 GB)

Key = tuple[int, int]  # (instance id, rank)


def kv_budgets(plans: Sequence[InstancePlan], loaded: Mapping[Key, tuple[int, int]],
               fraction: float) -> dict[Key, int | None]:
    """Bytes per worker (None: the worker's own rule). ``loaded``: each worker's (weight
    bytes, device total memory)."""
    workers = [w for p in plans for w in p.workers]
    sized = [w for w in workers if w.device.startswith("cuda") and w.kv_cache_memory is None]
    budgets: dict[Key, int | None] = {(w.instance_id, w.rank): None for w in workers}
    if not sized:
        return budgets
    extra: dict[int, int] = {}
    decode = [w for w in workers if w.role == "decode"]
    for dev in {w.device for w in workers if w.role == "prefill"}:
        importers = {d.device for d in decode if d.device != dev}
        extra[_index(dev)] = PEER_CONTEXT_BYTES * sum(
            1 for d in decode if d.device in importers)
    devices = [_index(w.device) for w in sized]
    weights = [loaded[(w.instance_id, w.rank)][0] for w in sized]
    totals = {_index(w.device): loaded[(w.instance_id, w.rank)][1] for w in sized}
    for w, b in zip(sized, kv_pool_budgets(devices, weights, totals, fraction=fraction,
                                           extra_bytes=extra), strict=True):
        budgets[(w.instance_id, w.rank)] = b
    return budgets


def _index(device: str) -> int:
    return int(device.partition(":")[2] or 0)
