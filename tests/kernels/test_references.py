"""The torch references (the engine's CPU attention path) against naive dense attention."""

from __future__ import annotations

import pytest
import torch

from dsbox.kernels.decode_attention import decode_attention_ref
from dsbox.kernels.prefill_attention import prefill_attention_ref

F16, F32 = torch.float16, torch.float32


def naive_attention(q, k, v, scale, q_start):
    """q [q_len, H, D] at positions q_start.., k/v [kv_len, H, D] contiguous; float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    q_pos = torch.arange(q.shape[0]) + q_start
    mask = torch.arange(k.shape[0])[None, :] > q_pos[:, None]
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v)


@pytest.mark.parametrize(
    "dtype,head_dim,block_size,kv_lens,q_lens",
    [
        (F32, 64, 16, [1, 17, 300], [1, 17, 300]),
        (F32, 80, 32, [1025, 40], [100, 1]),
        (F16, 128, 8, [33, 9], [5, 9]),
    ],
)
def test_prefill_ref_against_naive(make_paged_kv, check_close, dtype, head_dim, block_size,
                                   kv_lens, q_lens):
    kv = make_paged_kv(kv_lens, 2, head_dim, block_size, dtype, "cpu", pool=True)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(sum(q_lens), 2, head_dim, generator=gen).to(dtype)
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    scale = head_dim**-0.5
    out = torch.full_like(q, float("nan"))
    prefill_attention_ref(q, kv.k_cache, kv.v_cache, cu, kv.seq_lens, kv.block_tables, scale,
                          out)
    expected = torch.cat([
        naive_attention(q[cu[b]:cu[b + 1]], kv.dense_k[b], kv.dense_v[b], scale,
                        kv_lens[b] - q_lens[b])
        for b in range(len(kv_lens))
    ])
    check_close(out, expected, dtype)


@pytest.mark.parametrize(
    "dtype,head_dim,block_size,lens",
    [
        (F32, 64, 16, [1, 2, 17, 300]),
        (F32, 80, 32, [1025, 1, 64]),
        (F16, 128, 8, [7, 90]),
    ],
)
def test_decode_ref_against_naive(make_paged_kv, check_close, dtype, head_dim, block_size, lens):
    kv = make_paged_kv(lens, 3, head_dim, block_size, dtype, "cpu", pool=True)
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(len(lens), 3, head_dim, generator=gen).to(dtype)
    scale = head_dim**-0.5
    out = torch.full_like(q, float("nan"))
    decode_attention_ref(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, scale, out)
    expected = torch.cat([
        naive_attention(q[b:b + 1], kv.dense_k[b], kv.dense_v[b], scale, n - 1)
        for b, n in enumerate(lens)
    ])
    check_close(out, expected, dtype)
