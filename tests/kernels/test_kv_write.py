"""write_kv (Triton, interpreter on CPU) against write_kv_ref, and the reference itself."""

from __future__ import annotations

import pytest
import torch

from dsbox.kernels.kv_write import write_kv, write_kv_ref

CASES = [
    # dtype, num_heads, head_dim, block_size, slot dtype, pool view
    (torch.float16, 3, 80, 16, torch.int64, False),
    (torch.float32, 2, 128, 32, torch.int32, True),
    (torch.float16, 4, 64, 8, torch.int32, True),
]


def _caches(num_blocks, block_size, num_heads, head_dim, dtype, pool):
    shape = (num_blocks, block_size, num_heads, head_dim)
    if pool:
        base = torch.full((3, 2, *shape), -7.0, dtype=dtype)
        return base[2, 0], base[2, 1]
    return torch.full(shape, -7.0, dtype=dtype), torch.full(shape, -7.0, dtype=dtype)


@pytest.mark.parametrize("dtype,num_heads,head_dim,block_size,slot_dtype,pool", CASES)
def test_write_kv_matches_reference(device, dtype, num_heads, head_dim, block_size, slot_dtype,
                                    pool):
    gen = torch.Generator().manual_seed(1)
    num_blocks, num_tokens = 9, 40
    # key/value as strided views of a fused qkv tensor, as the model produces them
    qkv = torch.randn(num_tokens, 3, num_heads, head_dim, generator=gen).to(dtype)
    key, value = qkv[:, 1], qkv[:, 2]
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[[0, 5, 39]] = -1
    slots = slots.to(slot_dtype)

    k_ref, v_ref = _caches(num_blocks, block_size, num_heads, head_dim, dtype, pool)
    write_kv_ref(key, value, k_ref, v_ref, slots)
    k_cache, v_cache = _caches(num_blocks, block_size, num_heads, head_dim, dtype, pool)
    k_cache, v_cache = k_cache.to(device), v_cache.to(device)
    write_kv(key.to(device), value.to(device), k_cache, v_cache, slots.to(device))
    assert torch.equal(k_cache.cpu(), k_ref)
    assert torch.equal(v_cache.cpu(), v_ref)


def test_write_kv_ref_against_loop():
    gen = torch.Generator().manual_seed(2)
    num_blocks, block_size, num_heads, head_dim = 5, 8, 2, 16
    key = torch.randn(11, num_heads, head_dim, generator=gen)
    value = torch.randn(11, num_heads, head_dim, generator=gen)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:11]
    slots[4] = -1
    k_cache = torch.zeros(num_blocks, block_size, num_heads, head_dim)
    v_cache = torch.zeros_like(k_cache)
    write_kv_ref(key, value, k_cache, v_cache, slots)
    k_exp, v_exp = torch.zeros_like(k_cache), torch.zeros_like(v_cache)
    for t, slot in enumerate(slots.tolist()):
        if slot >= 0:
            k_exp[slot // block_size, slot % block_size] = key[t]
            v_exp[slot // block_size, slot % block_size] = value[t]
    assert torch.equal(k_cache, k_exp)
    assert torch.equal(v_cache, v_exp)


def test_write_kv_rejects_bad_shapes():
    k_cache = torch.zeros(2, 8, 2, 16)
    with pytest.raises(ValueError):
        write_kv_ref(torch.zeros(3, 2, 32), torch.zeros(3, 2, 32), k_cache, k_cache.clone(),
                     torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError):
        write_kv_ref(torch.zeros(3, 2, 16), torch.zeros(3, 2, 16), k_cache, k_cache.clone(),
                     torch.zeros(3))


def test_cpu_tensors_fall_back_to_interpreter_without_env():
    """A kernel module imported without TRITON_INTERPRET still runs on CPU tensors."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from dsbox.kernels.kv_write import write_kv, write_kv_ref\n"
        "k = torch.randn(3, 2, 16); s = torch.tensor([0, -1, 9])\n"
        "a, b = torch.zeros(2, 8, 2, 16), torch.zeros(2, 8, 2, 16)\n"
        "write_kv(k, k, a, b, s); c = torch.zeros_like(a); write_kv_ref(k, k, c, c.clone(), s)\n"
        "assert torch.equal(a, c)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
