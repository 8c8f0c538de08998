"""KV re-sharding in the pull: every (prefill TP x PP) -> (decode TP x PP) pair."""

from __future__ import annotations

import itertools

import pytest
import torch

from dsbox.engine.runtime.kv_transfer import PoolShard, pull_blocks
from dsbox.engine.runtime.parallel import stage_layers

LAYERS, HEADS, HEAD_DIM, BLOCK = 6, 4, 8, 4
CONFIGS = [(tp, pp) for tp in (1, 2, 4) for pp in (1, 2, 3)]


def _shards(tp: int, pp: int) -> list[PoolShard]:
    per = HEADS // tp
    return [PoolShard(stage_layers(LAYERS, pp, s), range(r * per, (r + 1) * per))
            for s in range(pp) for r in range(tp)]


def _slice(full: torch.Tensor, shard: PoolShard) -> torch.Tensor:
    return full[shard.layers.start:shard.layers.stop, :, :, :,
                shard.heads.start:shard.heads.stop].clone()


@pytest.mark.parametrize("src_cfg,dst_cfg", list(itertools.product(CONFIGS, CONFIGS)))
def test_pull_reshards_every_pair(src_cfg, dst_cfg):
    g = torch.Generator().manual_seed(0)
    nblocks = 10
    full = torch.randn(LAYERS, 2, nblocks, BLOCK, HEADS, HEAD_DIM, generator=g)
    sources = [(_slice(full, s), s) for s in _shards(*src_cfg)]
    src_blocks, dst_blocks = [7, 2, 5], [0, 9, 3, 4]  # decode holds one more block
    for dst in _shards(*dst_cfg):
        pool = torch.full((len(dst.layers), 2, nblocks, BLOCK, len(dst.heads), HEAD_DIM),
                          float("nan"))
        nbytes = pull_blocks(pool, dst, dst_blocks, sources, src_blocks)
        want = _slice(full, dst)[:, :, src_blocks]
        assert torch.equal(pool[:, :, dst_blocks[:3]], want)
        assert torch.isnan(pool[:, :, [1, 2, 4, 5, 6, 7, 8]]).all()  # nothing else written
        assert nbytes == want.numel() * 4


def test_pull_rejects_too_few_destination_blocks():
    shard = PoolShard(range(LAYERS), range(HEADS))
    pool = torch.zeros(LAYERS, 2, 4, BLOCK, HEADS, HEAD_DIM)
    with pytest.raises(ValueError, match="destination blocks"):
        pull_blocks(pool, shard, [0], [(pool.clone(), shard)], [1, 2])


def _pull_case(device: str):
    g = torch.Generator().manual_seed(1)
    full = torch.randn(LAYERS, 2, 12, BLOCK, HEADS, HEAD_DIM, generator=g)
    sources = [(_slice(full, s).to(device), s) for s in _shards(2, 1)]
    dst = _shards(1, 2)[1]  # layers 3..5, all heads: pulls from both TP ranks
    pool = torch.full((len(dst.layers), 2, 12, BLOCK, len(dst.heads), HEAD_DIM), float("nan"),
                      device=device)
    src_blocks, dst_blocks = [3, 4, 5, 9, 0], [0, 1, 2, 6, 11]  # a run of three, two singles
    nbytes = pull_blocks(pool, dst, dst_blocks, sources, src_blocks)
    return full, dst, pool.cpu(), src_blocks, dst_blocks, nbytes


def test_pull_copies_runs_and_single_blocks():
    full, dst, pool, src_blocks, dst_blocks, nbytes = _pull_case("cpu")
    assert torch.equal(pool[:, :, dst_blocks], _slice(full, dst)[:, :, src_blocks])
    untouched = [b for b in range(12) if b not in dst_blocks]
    assert torch.isnan(pool[:, :, untouched]).all()
    assert nbytes == pool[:, :, dst_blocks].numel() * 4


@pytest.mark.gpu
def test_pull_on_one_gpu_uses_the_copy_kernel_and_matches_cpu():
    want = _pull_case("cpu")
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    got = _pull_case("cuda")
    assert torch.equal(got[2].nan_to_num(7.0), want[2].nan_to_num(7.0))
    assert got[5] == want[5]
    # pools and the pair list only: no temporary as large as the request's KV
    pools = 2 * 12 * BLOCK * HEADS * HEAD_DIM * 4 * (LAYERS + len(want[1].layers))
    assert torch.cuda.max_memory_allocated() - before <= pools + (1 << 20)
