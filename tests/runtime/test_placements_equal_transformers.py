"""Greedy tokens under every placement equal transformers' (CPU, gloo, fp32)."""

from __future__ import annotations

import pytest
import torch

from dsbox import LLM, SamplingParams
from tests.checkpoints import load_hf

PLACEMENTS = [
    "colocated:tp=1",
    "colocated:tp=2",
    "prefill:tp=1;decode:tp=1",
    "prefill:tp=2;decode:tp=1",
    "prefill:pp=2;decode:tp=2",
    "prefill:tp=1*2;decode:tp=1",
]
MAX_NEW = 12


@pytest.fixture(scope="module")
def prompts_and_reference(preln_ckpt):
    g = torch.Generator().manual_seed(7)
    lens = [1, 2, 5, 9, 14, 20, 27, 33, 40, 48, 57, 64, 80, 97, 111, 130]
    prompts = [[2] + torch.randint(4, 50000, (n,), generator=g).tolist() for n in lens]
    hf = load_hf(preln_ckpt)
    ref = []
    with torch.no_grad():
        for p in prompts:
            out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p),
                              dtype=torch.long), max_new_tokens=MAX_NEW,
                              min_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None,
                              pad_token_id=1)
            ref.append(out[0, len(p):].tolist())
    return prompts, ref


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_greedy_equals_transformers(placement, preln_ckpt, prompts_and_reference):
    prompts, ref = prompts_and_reference
    with LLM(model=str(preln_ckpt), dtype="float32", device="cpu", placement=placement,
             kv_cache_memory=4 << 20) as llm:
        outs = llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW, temperature=0,
                                                    ignore_eos=True))
        stats = llm.stats()
    assert [o.error for o in outs] == [None] * len(prompts)
    for i, (o, r) in enumerate(zip(outs, ref, strict=True)):
        assert o.token_ids == r, f"prompt {i} ({len(prompts[i])} tokens) under {placement}"
    assert stats.kv_blocks_used == 0
    if "decode" in placement:
        for o in outs:  # every request went through a transfer, stamped in order
            lc = o.lifecycle
            assert lc.prefill_end <= lc.decode_queued <= lc.transfer_start <= lc.transfer_end \
                <= lc.decode_start <= lc.finish
            assert lc.breakdown().total() == pytest.approx(lc.finish - lc.prefill_queued)
