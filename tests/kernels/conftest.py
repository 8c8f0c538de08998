"""Fixtures for the kernel tests.

Without CUDA the Triton kernels run in the interpreter: TRITON_INTERPRET must be set before
any kernel module is imported (``@triton.jit`` reads it at decoration time).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@pytest.fixture
def device() -> str:
    """Where the kernel-vs-reference cases run: CPU under the interpreter, else CUDA."""
    if _interpreting():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA GPU")


class PagedKV:
    """Per-sequence K/V scattered into a paged cache, plus the same K/V kept dense."""

    def __init__(self, k_cache, v_cache, block_tables, seq_lens, dense_k, dense_v):
        self.k_cache = k_cache
        self.v_cache = v_cache
        self.block_tables = block_tables  # int32 [batch, max_blocks]
        self.seq_lens = seq_lens  # int32 [batch]
        self.dense_k = dense_k  # list of [len, heads, dim]
        self.dense_v = dense_v


def make_paged_kv(
    lens: list[int],
    num_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    device: str,
    *,
    pool: bool = False,
    seed: int = 0,
) -> PagedKV:
    """Random K/V for sequences of ``lens`` in shuffled blocks of a paged cache.

    Every slot not holding a sequence's token is NaN (the tail of each last block, spare
    blocks), and block-table padding points at a NaN block: a kernel that reads past a
    sequence's length, or a padding entry, turns the output NaN. With ``pool`` the caches
    are strided views into a [layers, 2, blocks, block_size, heads, dim] pool.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-n // block_size) for n in lens]
    num_blocks = sum(blocks_per_seq) + 2  # + a poison block for padding + one spare
    shape = (num_blocks, block_size, num_heads, head_dim)
    if pool:
        base = torch.full((2, 2, *shape), float("nan"), dtype=dtype)
        k_cache, v_cache = base[1, 0], base[1, 1]
    else:
        k_cache = torch.full(shape, float("nan"), dtype=dtype)
        v_cache = torch.full(shape, float("nan"), dtype=dtype)
    perm = torch.randperm(num_blocks, generator=gen)
    poison_block = int(perm[-1])
    max_blocks = max(blocks_per_seq, default=0) + 2
    block_tables = torch.full((len(lens), max_blocks), poison_block, dtype=torch.int32)
    dense_k, dense_v = [], []
    next_block = 0
    for b, n in enumerate(lens):
        k = torch.randn(n, num_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(n, num_heads, head_dim, generator=gen).to(dtype)
        dense_k.append(k)
        dense_v.append(v)
        for j in range(blocks_per_seq[b]):
            blk = int(perm[next_block])
            next_block += 1
            block_tables[b, j] = blk
            lo, hi = j * block_size, min(n, (j + 1) * block_size)
            k_cache[blk, : hi - lo] = k[lo:hi]
            v_cache[blk, : hi - lo] = v[lo:hi]
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    return PagedKV(
        k_cache.to(device),
        v_cache.to(device),
        block_tables.to(device),
        seq_lens.to(device),
        [k.to(device) for k in dense_k],
        [v.to(device) for v in dense_v],
    )


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (fp32)."""
    ref = ref.float()
    return float((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def check_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Every element written (no NaN left from the poison) and within the dtype's tolerance."""
    num_nan = int(torch.isnan(out).sum())
    assert num_nan == 0, f"{num_nan} NaN in the output: not written, or poison read"
    err = rel_err(out, ref)
    tol = TOL[dtype or out.dtype]
    assert err <= tol, f"relative error {err:.3g} > {tol:g}"


@pytest.fixture(name="make_paged_kv")
def _make_paged_kv_fixture():
    return make_paged_kv


@pytest.fixture(name="check_close")
def _check_close_fixture():
    return check_close
