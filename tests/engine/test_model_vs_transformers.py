"""The OPT model over the paged cache against transformers' OPTForCausalLM."""

from __future__ import annotations

import pytest
import torch

from dsbox import LLM, SamplingParams
from dsbox.engine.core.scheduler import Phase
from dsbox.engine.core.sequence import Sequence
from dsbox.engine.core.step_batch import build_step_batch
from dsbox.metrics.lifecycle import Lifecycle
from tests.checkpoints import load_hf
from tests.engine.direct import direct, kv_blocks_used

PROMPT_LENS = [1, 5, 17, 33, 64, 100]


def _prompts(n_lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[2] + torch.randint(4, 50000, (n - 1,), generator=g).tolist() for n in n_lens]


@pytest.mark.parametrize("variant", ["preln", "postln"])
def test_prefill_and_decode_logits_match(variant, request):
    ckpt = request.getfixturevalue(f"{variant}_ckpt")
    hf = load_hf(ckpt)
    llm = LLM(model=str(ckpt), dtype="float32", device="cpu", kv_cache_memory=8 << 20)
    runner, scheduler = direct(llm)
    prompts = _prompts(PROMPT_LENS)
    seqs = {}
    for i, p in enumerate(prompts):
        seq = Sequence(i, p, SamplingParams(max_tokens=4, temperature=0), Lifecycle(0.0),
                       eos_token_id=2)
        scheduler.add(seq, 0.0)
        seqs[i] = seq
    out = scheduler.schedule(0.0)
    assert out.phase is Phase.PREFILL and len(out.seqs) == len(prompts)
    batch = build_step_batch(out, seqs)
    logits = runner.logits(batch)
    worst = 0.0
    nexts = []
    row = 0
    with torch.no_grad():
        for p in prompts:
            ref = hf(torch.tensor([p])).logits[0]
            got = logits[row: row + len(p)]
            worst = max(worst, (got - ref).abs().max().item())
            row += len(p)
            nexts.append(int(ref[-1].argmax()))
    assert worst <= 1e-4, f"prefill max abs diff {worst}"

    # one decode step through the paged decode path
    scheduler.on_step_done(out, nexts, 0.0)
    out = scheduler.schedule(0.0)
    assert out.phase is Phase.DECODE
    logits = runner.logits(build_step_batch(out, seqs))
    llm.close()
    with torch.no_grad():
        for k, s in enumerate(out.seqs):
            full = prompts[s.seq_id] + [nexts[s.seq_id]]
            ref = hf(torch.tensor([full])).logits[0, -1]
            diff = (logits[k] - ref).abs().max().item()
            assert diff <= 1e-4, f"decode seq {s.seq_id}: max abs diff {diff}"


def _hf_greedy(hf, prompt, max_new):
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                          dtype=torch.long), max_new_tokens=max_new, min_new_tokens=max_new,
                          do_sample=False, eos_token_id=None, pad_token_id=1)
    return out[0, len(prompt):].tolist()


def test_greedy_equals_transformers_with_preemption(preln_ckpt):
    hf = load_hf(preln_ckpt)
    lens = [3 + (i * 37) % 150 for i in range(32)]
    prompts = _prompts(lens, seed=1)
    max_new = 32
    # pool: 40 blocks of 16 tokens = 640 tokens, far less than the 32 requests need at once
    per_block = 2 * 3 * 16 * 64 * 4
    llm = LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
              kv_cache_memory=40 * per_block, max_num_seqs=32, max_model_len=640)
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_new, temperature=0,
                                                ignore_eos=True))
    assert sum(o.lifecycle.num_preemptions for o in outs) > 0, "the test must force preemption"
    assert kv_blocks_used(llm) == 0
    for p, o in zip(prompts, outs, strict=True):
        assert o.token_ids == _hf_greedy(hf, p, max_new)
