"""The paged KV pool of one device: sizing from a memory budget and the pool tensor.

Layout: one tensor ``[num_layers, 2, num_blocks, block_size, num_heads, head_dim]``; layer
``l``'s K and V caches are the contiguous views ``pool[l, 0]`` and ``pool[l, 1]``. One tensor
lets a transfer address a request's blocks in every layer at once and be shared whole
(CUDA IPC or shared memory) at start-up.

Sizing on a GPU that several workers share (:func:`kv_pool_bytes`, :func:`kv_pool_budgets`)
starts from the device's *total* memory less every co-located worker's weights, never from
free memory measured by one worker while the others are still loading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

DTYPE_SIZE = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


def bytes_per_block(num_layers: int, num_heads: int, head_dim: int, block_size: int,
                    dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * num_heads * head_dim * DTYPE_SIZE[dtype]


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA free memory, or available RAM on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


CPU_DEFAULT_KV_BYTES = 1 << 30  # CPU runs get a 1 GiB pool unless told otherwise


def kv_budget(device: torch.device, kv_cache_memory: int | None, fraction: float) -> int:
    """Bytes for the KV pool: the explicit budget, else a share of what is free."""
    if kv_cache_memory is not None:
        return kv_cache_memory
    free = available_memory(device)
    if device.type == "cuda":
        return int(free * fraction)
    return min(CPU_DEFAULT_KV_BYTES, free // 4)


# per worker: CUDA context (~0.5 GiB), NCCL buffers, activations of the largest step, the
# decode workspace and allocator slack
DEFAULT_RESERVE_BYTES = 2 << 30


def kv_pool_bytes(total_memory: int, weight_bytes: Sequence[int], *, fraction: float = 0.9,
                  reserve_bytes: int = DEFAULT_RESERVE_BYTES, extra_bytes: int = 0) -> int:
    """KV pool bytes for each worker on one device.

    ``fraction`` of the device's ``total_memory``, less the weights of every worker on it
    (``weight_bytes``, one entry per worker, this one included), ``reserve_bytes`` per
    worker and ``extra_bytes`` not owned by any of them (e.g. the CUDA context a decode
    process on another GPU opens here when it imports this GPU's pool, ~0.5 GiB each), split
    evenly. Pure arithmetic on totals: the answer does not depend on which worker loaded
    first. Raises ``ValueError`` when nothing is left for the pools.
    """
    if total_memory <= 0:
        raise ValueError("total_memory must be positive")
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    if reserve_bytes < 0 or extra_bytes < 0 or any(w < 0 for w in weight_bytes):
        raise ValueError("weight and reserve bytes must be >= 0")
    n = len(weight_bytes)
    if n == 0:
        raise ValueError("no worker on the device")
    usable = int(total_memory * fraction)
    left = usable - sum(weight_bytes) - n * reserve_bytes - extra_bytes
    if left < n:
        raise ValueError(
            f"{n} worker(s) on one device: weights {sum(weight_bytes) / 2**30:.1f} GiB + "
            f"reserve {n} x {reserve_bytes / 2**30:.1f} GiB + other "
            f"{extra_bytes / 2**30:.1f} GiB exceed {fraction:.0%} of "
            f"{total_memory / 2**30:.1f} GiB; nothing is left for the KV pools")
    return left // n


def kv_pool_budgets(devices: Sequence[int], weight_bytes: Sequence[int],
                    total_memory: int | Mapping[int, int], *, fraction: float = 0.9,
                    reserve_bytes: int = DEFAULT_RESERVE_BYTES,
                    extra_bytes: Mapping[int, int] | None = None) -> list[int]:
    """:func:`kv_pool_bytes` for every worker of a deployment: worker ``i`` runs on device
    ``devices[i]`` with ``weight_bytes[i]`` of weights. ``total_memory`` is one size for
    every device or a size per device id; ``extra_bytes`` per device id (default 0)."""
    if len(devices) != len(weight_bytes):
        raise ValueError("one device and one weight size per worker")
    per_device: dict[int, list[int]] = {}
    for d, w in zip(devices, weight_bytes, strict=True):
        per_device.setdefault(d, []).append(w)
    budget = {}
    for d, weights in per_device.items():
        total = total_memory[d] if isinstance(total_memory, Mapping) else total_memory
        budget[d] = kv_pool_bytes(total, weights, fraction=fraction,
                                  reserve_bytes=reserve_bytes,
                                  extra_bytes=(extra_bytes or {}).get(d, 0))
    return [budget[d] for d in devices]


def num_blocks_for(budget: int, per_block: int) -> int:
    return budget // per_block


def allocate_pool(num_layers: int, num_blocks: int, block_size: int, num_heads: int,
                  head_dim: int, dtype: torch.dtype, device: torch.device,
                  shared: bool = False) -> torch.Tensor:
    """Pool tensor, uninitialised: a slot is always written before it is read (attention
    never reads past a sequence's length). ``shared`` puts a CPU pool in shared memory for
    other processes."""
    pool = torch.empty(num_layers, 2, num_blocks, block_size, num_heads, head_dim,
                       dtype=dtype, device=device)
    if shared and device.type == "cpu":
        pool.share_memory_()
    return pool


SHM_PATH = "/dev/shm"


def shared_memory_check(budgets: list[int | None], path: str = SHM_PATH) -> None:
    """CPU worker processes keep their KV pools in shared memory (``/dev/shm``): raise
    ValueError, naming the size needed and the fix, when it cannot hold them all (Docker
    gives containers 64 MB unless told otherwise). ``budgets``: each CPU worker's
    ``kv_cache_memory`` (None: the default share of free RAM)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return  # no /dev/shm here: torch shares memory some other way
    free = st.f_bavail * st.f_frsize
    cpu = torch.device("cpu")
    need = sum(kv_budget(cpu, b, 1.0) for b in budgets)
    if need > free:
        gib = -(-need // 2**30)
        raise ValueError(
            f"{path} has {free / 2**20:.0f} MiB free but the {len(budgets)} CPU workers' KV "
            f"pools need {need / 2**20:.0f} MiB: give the container more shared memory "
            f"(docker run --shm-size={gib}g) or lower kv_cache_memory")
