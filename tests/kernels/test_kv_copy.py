"""copy_blocks (Triton, interpreter on CPU) against copy_blocks_ref, and the runs."""

from __future__ import annotations

import pytest
import torch

from dsbox.kernels.kv_copy import block_runs, copy_blocks, copy_blocks_ref

# dtype, layers, heads, head_dim, block size, source (layers, heads) slice of a bigger pool
CASES = {
    "fp16-whole-pools": (torch.float16, 2, 3, 80, 16, None),
    "fp32-layer-and-head-slice": (torch.float32, 3, 4, 64, 8, (slice(1, 3), slice(1, 3))),
}
PAIRS = [(5, 0), (6, 1), (7, 2), (2, 6), (0, 4)]  # a run of 3, then two single blocks


def _pools(dtype, layers, heads, head_dim, block_size, part, device):
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(layers, 2, 8, block_size, heads, head_dim, generator=gen).to(dtype)
    dst = torch.full((layers, 2, 7, block_size, heads, head_dim), float("nan"), dtype=dtype)
    if part is not None:
        ls, hs = part
        src, dst = src[ls, :, :, :, hs], dst[ls, :, :, :, hs]
    return src.to(device), dst.to(device)


@pytest.mark.parametrize("case", list(CASES))
def test_copy_blocks_matches_reference(device, case):
    dtype, layers, heads, head_dim, block_size, part = CASES[case]
    src, dst = _pools(dtype, layers, heads, head_dim, block_size, part, device)
    _, want = _pools(dtype, layers, heads, head_dim, block_size, part, "cpu")
    copy_blocks_ref(src.cpu(), want, PAIRS)
    copy_blocks(src, dst, torch.tensor(PAIRS, dtype=torch.int32, device=device))
    assert torch.equal(dst.cpu().nan_to_num(7.0), want.nan_to_num(7.0))
    for s, d in PAIRS:
        assert torch.equal(dst[:, :, d].cpu(), src[:, :, s].cpu())
    assert torch.isnan(dst[:, :, [3, 5]]).all()  # blocks not named stay untouched


def test_block_runs():
    assert block_runs(PAIRS) == [(5, 0, 3), (2, 6, 1), (0, 4, 1)]
    assert block_runs([]) == []
    assert block_runs([(1, 1), (2, 2), (4, 3)]) == [(1, 1, 2), (4, 3, 1)]


def test_copy_blocks_rejects_mismatched_pools():
    a = torch.zeros(2, 2, 4, 8, 2, 16)
    with pytest.raises(ValueError, match="differ"):
        copy_blocks_ref(a, torch.zeros(2, 2, 4, 8, 3, 16), [(0, 0)])
    with pytest.raises(ValueError, match="dtype"):
        copy_blocks_ref(a, a.half(), [(0, 0)])
