"""decode_attention (Triton, interpreter on CPU) against decode_attention_ref."""

from __future__ import annotations

import pytest
import torch

from dsbox.kernels.decode_attention import (
    decode_attention,
    decode_attention_ref,
    decode_num_splits,
    decode_workspace,
)

F16, F32 = torch.float16, torch.float32
MIXED_1_300 = [1, 7, 16, 31, 64, 129, 255, 300]

# dtype, num_heads, head_dim, block_size, seq_lens, num_splits (None: heuristic), pool views
CASES = {
    "fp32-d64-bs16-mixed": (F32, 2, 64, 16, [1, 2, 17, 300], None, False),
    "fp16-d80-bs16-ctx1025-auto": (F16, 2, 80, 16, [1025, 3], None, False),
    "fp16-d80-bs16-ctx1025-1split": (F16, 2, 80, 16, [1025, 3], 1, False),
    "fp16-d80-bs16-ctx1025-4splits": (F16, 2, 80, 16, [1025, 3], 4, False),
    "fp16-d128-bs32-mixed-1-300": (F16, 2, 128, 32, MIXED_1_300, None, False),
    "fp32-d128-bs8-pool-3splits": (F32, 1, 128, 8, [5, 77, 300], 3, True),
    "fp16-d64-bs32-ctx1025-3splits": (F16, 4, 64, 32, [1025], 3, True),
}


def _q(batch, num_heads, head_dim, dtype, device):
    gen = torch.Generator().manual_seed(4)
    # q as a view of a fused qkv tensor, as the model produces it
    return torch.randn(batch, 3, num_heads, head_dim, generator=gen).to(dtype)[:, 0].to(device)


@pytest.mark.parametrize("case", list(CASES))
def test_decode_attention_matches_reference(device, make_paged_kv, check_close, case):
    dtype, num_heads, head_dim, block_size, lens, num_splits, pool = CASES[case]
    kv = make_paged_kv(lens, num_heads, head_dim, block_size, dtype, device, pool=pool)
    q = _q(len(lens), num_heads, head_dim, dtype, device)
    scale = head_dim**-0.5
    ref = decode_attention_ref(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, scale,
                               torch.empty_like(q))
    out = torch.full_like(q, float("nan"))
    res = decode_attention(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, scale, out,
                           num_splits=num_splits)
    assert res is out
    check_close(out, ref)


def test_decode_attention_preallocated_workspace(device, make_paged_kv, check_close):
    lens = [300, 1, 45]
    kv = make_paged_kv(lens, 2, 64, 16, F16, device)
    q = _q(len(lens), 2, 64, F16, device)
    workspace = decode_workspace(8, 2, 64, device, max_splits=4)
    workspace.fill_(float("nan"))
    ref = decode_attention_ref(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, 0.125,
                               torch.empty_like(q))
    for num_splits in (None, 4):
        out = torch.full_like(q, float("nan"))
        decode_attention(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, 0.125, out,
                         workspace, num_splits=num_splits)
        check_close(out, ref)
    with pytest.raises(ValueError):
        decode_attention(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, 0.125, out,
                         workspace, num_splits=5)


def test_decode_attention_empty_sequence_gives_zeros(device, make_paged_kv):
    kv = make_paged_kv([0, 5], 1, 64, 16, F32, device)
    q = _q(2, 1, 64, F32, device)
    for fn in (decode_attention, decode_attention_ref):
        out = torch.full_like(q, float("nan"))
        fn(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.seq_lens, 0.125, out, num_splits=2)
        assert torch.equal(out[0], torch.zeros_like(out[0]))
        assert not torch.isnan(out).any()


def test_decode_num_splits_is_static_and_bounded():
    assert decode_num_splits(64, 40, 2048, "cpu") == 1
    assert decode_num_splits(1, 1, 100, "cpu") == 1  # never split below 128 tokens
    assert decode_num_splits(1, 1, 100_000, "cpu", max_splits=8) == 8
