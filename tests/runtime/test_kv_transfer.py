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
