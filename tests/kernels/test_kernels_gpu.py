"""Compiled Triton kernels on a CUDA GPU against the torch references (bf16 included)."""

from __future__ import annotations

import pytest
import torch

from dsbox.kernels.decode_attention import (
    decode_attention,
    decode_attention_ref,
    decode_workspace,
)
from dsbox.kernels.kv_write import write_kv, write_kv_ref
from dsbox.kernels.prefill_attention import prefill_attention, prefill_attention_ref

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
HEAD_DIMS = [64, 80, 128]


@pytest.fixture
def cuda(device):
    if device != "cuda":
        pytest.skip("compiled kernels need CUDA (not the interpreter)")
    return device


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("block_size", [8, 16, 32])
def test_prefill_gpu(cuda, make_paged_kv, check_close, dtype, head_dim, block_size):
    kv_lens, q_lens = [1, 100, 1025, 2000, 300], [1, 100, 200, 2000, 77]
    kv = make_paged_kv(kv_lens, 8, head_dim, block_size, dtype, cuda, pool=True)
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(sum(q_lens), 8, head_dim, generator=gen).to(dtype).to(cuda)
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32).to(cuda)
    scale = head_dim**-0.5
    ref = prefill_attention_ref(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables,
                                scale, torch.empty_like(q))
    out = torch.full_like(q, float("nan"))
    prefill_attention(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables, scale, out,
                      max_q_len=max(q_lens))
    check_close(out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("num_splits", [None, 1, 5])
def test_decode_gpu(cuda, make_paged_kv, check_close, dtype, head_dim, block_size, num_splits):
    gen = torch.Generator().manual_seed(8)
    lens = torch.randint(1, 2049, (33,), generator=gen).tolist() + [1, 2048, 1025]
    kv = make_paged_kv(lens, 8, head_dim, block_size, dtype, cuda, pool=True)
    q = torch.randn(len(lens), 8, head_dim, generator=gen).to(dtype).to(cuda)
    scale = head_dim**-0.5
    ref = decode_attention_ref(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, scale,
                               torch.empty_like(q))
    out = torch.full_like(q, float("nan"))
    decode_attention(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, scale, out,
                     num_splits=num_splits)
    check_close(out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_write_kv_gpu(cuda, dtype):
    gen = torch.Generator().manual_seed(9)
    key = torch.randn(300, 40, 128, generator=gen).to(dtype)
    value = torch.randn(300, 40, 128, generator=gen).to(dtype)
    slots = torch.randperm(64 * 16, generator=gen)[:300]
    slots[::7] = -1
    k_ref, v_ref = torch.zeros(64, 16, 40, 128, dtype=dtype), torch.zeros(64, 16, 40, 128,
                                                                           dtype=dtype)
    write_kv_ref(key, value, k_ref, v_ref, slots)
    k_cache, v_cache = torch.zeros_like(k_ref).to(cuda), torch.zeros_like(v_ref).to(cuda)
    write_kv(key.to(cuda), value.to(cuda), k_cache, v_cache, slots.to(cuda))
    assert torch.equal(k_cache.cpu(), k_ref) and torch.equal(v_cache.cpu(), v_ref)


def test_decode_cuda_graph(cuda, make_paged_kv, check_close):
    """Captured once with a preallocated workspace, replayed on new q and seq_lens."""
    lens = [2000, 700, 64, 1]
    kv = make_paged_kv(lens, 8, 128, 16, torch.float16, cuda)
    q = torch.randn(len(lens), 8, 128, device=cuda, dtype=torch.float16)
    out = torch.empty_like(q)
    seq_lens = torch.tensor([1, 1, 1, 1], dtype=torch.int32, device=cuda)
    workspace = decode_workspace(len(lens), 8, 128, cuda)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, seq_lens, 0.088, out, workspace)
    decode_attention(*args, num_splits=4)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        decode_attention(*args, num_splits=4)
    q.copy_(torch.randn_like(q))
    seq_lens.copy_(kv.seq_lens)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    ref = decode_attention_ref(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, 0.088,
                               torch.empty_like(q))
    check_close(out, ref)
