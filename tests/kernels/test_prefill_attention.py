"""prefill_attention (Triton, interpreter on CPU) against prefill_attention_ref."""

from __future__ import annotations

import pytest
import torch

from dsbox.kernels.prefill_attention import prefill_attention, prefill_attention_ref

F16, F32 = torch.float16, torch.float32

# dtype, num_heads, head_dim, block_size, KV lengths, query lengths (< KV: continuing on
# cached context), caches as pool views, q as a view of a fused qkv tensor
CASES = {
    "fp32-d64-bs16-fresh": (F32, 2, 64, 16, [1, 17, 64], [1, 17, 64], False, False),
    "fp16-d80-bs16-ctx1025": (F16, 1, 80, 16, [1025], [1025], False, False),
    "fp16-d128-bs32-mixed-1-300": (F16, 1, 128, 32, [1, 5, 33, 128, 300], [1, 5, 33, 128, 300],
                                   False, False),
    "fp16-d64-bs8-continuing": (F16, 2, 64, 8, [100, 40, 7], [20, 40, 1], False, False),
    "fp32-d80-bs32-continuing-1025": (F32, 1, 80, 32, [1025], [65], False, False),
    "fp16-d128-bs16-pool-qkv-view": (F16, 2, 128, 16, [50, 90], [50, 30], True, True),
    "fp32-d128-bs8-continuing": (F32, 1, 128, 8, [3, 250], [3, 17], True, False),
}


def _inputs(make_paged_kv, device, dtype, num_heads, head_dim, block_size, kv_lens, q_lens,
            pool, qkv_view):
    kv = make_paged_kv(kv_lens, num_heads, head_dim, block_size, dtype, device, pool=pool)
    gen = torch.Generator().manual_seed(3)
    total = sum(q_lens)
    if qkv_view:
        q = torch.randn(total, 3, num_heads, head_dim, generator=gen).to(dtype)[:, 0]
    else:
        q = torch.randn(total, num_heads, head_dim, generator=gen).to(dtype)
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    return kv, q.to(device), cu.to(device)


@pytest.mark.parametrize("case", list(CASES))
def test_prefill_attention_matches_reference(device, make_paged_kv, check_close, case):
    dtype, num_heads, head_dim, block_size, kv_lens, q_lens, pool, qkv_view = CASES[case]
    kv, q, cu = _inputs(make_paged_kv, device, dtype, num_heads, head_dim, block_size, kv_lens,
                        q_lens, pool, qkv_view)
    scale = head_dim**-0.5
    ref = torch.empty_like(q)
    prefill_attention_ref(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables, scale,
                          ref)
    out = torch.full_like(q, float("nan"))
    res = prefill_attention(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables, scale,
                            out, max_q_len=max(q_lens))
    assert res is out
    check_close(out, ref)


def test_prefill_attention_without_max_q_len(device, make_paged_kv, check_close):
    kv, q, cu = _inputs(make_paged_kv, device, F16, 2, 64, 16, [9, 30], [9, 12], False, False)
    ref = prefill_attention_ref(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables,
                                0.125, torch.empty_like(q))
    out = torch.full_like(q, float("nan"))
    prefill_attention(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables, 0.125, out)
    check_close(out, ref)


def test_prefill_attention_rejects_bad_dtypes(make_paged_kv):
    kv = make_paged_kv([4], 1, 16, 8, F32, "cpu")
    q = torch.zeros(4, 1, 16)
    with pytest.raises(ValueError):
        prefill_attention_ref(q, kv.k_cache, kv.v_cache, torch.tensor([0, 4]), kv.seq_lens,
                              kv.block_tables, 0.25, torch.empty_like(q))
