"""The paged KV pool of one device: sizing from a memory budget and the pool tensor.

Layout: one tensor ``[num_layers, 2, num_blocks, block_size, num_heads, head_dim]``; layer
``l``'s K and V caches are the contiguous views ``pool[l, 0]`` and ``pool[l, 1]``. One tensor
lets a transfer address a request's blocks in every layer at once and be shared whole
(CUDA IPC or shared memory) at start-up.
"""

from __future__ import annotations

import os

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
