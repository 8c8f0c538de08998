"""A request cannot outgrow the KV pool: generation stops at ``max_model_len``, and a pool
that cannot hold one sequence of that length is an error naming the memory it needs."""

from __future__ import annotations

import pytest

from dsbox import LLM, SamplingParams


def test_generation_stops_at_pool_capacity(preln_ckpt):
    per_block = 2 * 3 * 16 * 64 * 4
    llm = LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
              kv_cache_memory=3 * per_block, max_model_len=48)  # 48 token slots
    assert llm.client.max_model_len == 48
    outs = llm.generate([[2, 7, 8, 9], [2, 10, 11]],
                        SamplingParams(max_tokens=100, temperature=0, ignore_eos=True))
    assert [o.finish_reason for o in outs] == ["length", "length"]
    assert [len(o.prompt_token_ids) + len(o.token_ids) for o in outs] == [48, 48]
    assert llm.stats().kv_blocks_used == 0
    with pytest.raises(ValueError, match="limit is 48 tokens"):
        llm.generate([[2] * 60], SamplingParams(max_tokens=1))


def test_pool_smaller_than_one_sequence_names_the_memory_needed(preln_ckpt):
    per_block = 2 * 3 * 16 * 64 * 4  # 1536 bytes per token: 2048 tokens need 3 MiB
    with pytest.raises(ValueError, match=r"KV pool of colocated instance 0 holds 48 tokens "
                       r"\(0\.1 MiB per device\), less than one sequence of 2048 tokens: "
                       r"raise kv_cache_memory to at least 3\.0 MiB"):
        LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
            kv_cache_memory=3 * per_block)
