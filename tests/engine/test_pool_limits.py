"""A request cannot outgrow the KV pool: generation stops at the pool's capacity."""

from __future__ import annotations

import pytest

from dsbox import LLM, SamplingParams


def test_generation_stops_at_pool_capacity(preln_ckpt):
    per_block = 2 * 3 * 16 * 64 * 4
    llm = LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
              kv_cache_memory=3 * per_block)  # 48 token slots
    assert llm.engine.max_model_len == 48
    outs = llm.generate([[2, 7, 8, 9], [2, 10, 11]],
                        SamplingParams(max_tokens=100, temperature=0, ignore_eos=True))
    assert [o.finish_reason for o in outs] == ["length", "length"]
    assert [len(o.prompt_token_ids) + len(o.token_ids) for o in outs] == [48, 48]
    assert llm.engine.block_manager.num_used_blocks == 0
    with pytest.raises(ValueError, match="limit is 48 tokens"):
        llm.generate([[2] * 60], SamplingParams(max_tokens=1))
