"""Sampling and stopping through the real engine (tiny checkpoint), and the sampler function's
statistics on fixed logits: greedy, temperature, top-k, top-p, per-request seeds, max_tokens,
stop strings, stop token ids, EOS and ignore_eos, and SamplingParams validation.
"""

from __future__ import annotations

import pytest
import torch

from dsbox import LLM, SamplingParams
from dsbox.engine.model.sampler import sample
from tests.checkpoints import load_hf

PROMPTS = ["Hello there, how are you", "The quick brown fox", "def main():", "1, 2, 3,"]


@pytest.fixture(scope="module")
def llm(preln_ckpt):
    return LLM(model=str(preln_ckpt), dtype="float32", device="cpu", kv_cache_memory=4 << 20)


def gen(llm, prompts, **kw):
    return llm.generate(prompts, SamplingParams(**kw))


# --- greedy and the filters that reduce to it ----------------------------------------------
def test_greedy_equals_transformers(llm, preln_ckpt):
    outs = gen(llm, PROMPTS[:2], max_tokens=8, temperature=0, ignore_eos=True)
    hf = load_hf(preln_ckpt)
    for o in outs:
        with torch.no_grad():
            ref = hf.generate(torch.tensor([o.prompt_token_ids]), max_new_tokens=8,
                              min_new_tokens=8, do_sample=False, pad_token_id=1)
        assert o.token_ids == ref[0, len(o.prompt_token_ids):].tolist()


@pytest.mark.parametrize("kw", [dict(temperature=1.0, top_k=1),
                                dict(temperature=1.5, top_p=1e-6),
                                dict(temperature=1e-5)],
                         ids=["top_k=1", "top_p tiny", "temperature tiny"])
def test_filters_that_reduce_to_greedy(llm, kw):
    greedy = gen(llm, PROMPTS, max_tokens=10, temperature=0, ignore_eos=True)
    sampled = gen(llm, PROMPTS, max_tokens=10, ignore_eos=True, **kw)
    assert [o.token_ids for o in sampled] == [o.token_ids for o in greedy]


def test_temperature_samples_differ_from_greedy(llm):
    greedy = gen(llm, PROMPTS, max_tokens=12, temperature=0, ignore_eos=True)
    hot = gen(llm, PROMPTS, max_tokens=12, temperature=2.0, seed=3, ignore_eos=True)
    assert [o.token_ids for o in hot] != [o.token_ids for o in greedy]
    assert all(len(o.token_ids) == 12 for o in hot)


# --- seeds --------------------------------------------------------------------------------
def test_seed_is_independent_of_the_batch(llm):
    """A seeded request draws the same tokens alone and among other requests (greedy,
    unseeded, other seeds, other filters) that join and leave around it."""
    mine = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=1234,
                          ignore_eos=True)
    alone = llm.generate([PROMPTS[0]], mine)[0].token_ids
    others = [SamplingParams(max_tokens=5, temperature=0, ignore_eos=True),
              SamplingParams(max_tokens=20, temperature=0.8, ignore_eos=True),
              SamplingParams(max_tokens=9, temperature=1.3, top_k=20, seed=7,
                             ignore_eos=True)]
    outs = llm.generate([PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[3]],
                        [others[0], mine, others[1], others[2]])
    assert outs[1].token_ids == alone
    again = llm.generate([PROMPTS[0], PROMPTS[3]], [mine, others[1]])[0].token_ids
    assert again == alone


def test_seed_survives_preemption(preln_ckpt):
    per_block = 2 * 3 * 16 * 64 * 4  # layers, block size, hidden, fp32
    small = LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
                kv_cache_memory=6 * per_block, max_model_len=96)
    params = [SamplingParams(max_tokens=24, temperature=1.0, seed=s, ignore_eos=True)
              for s in range(4)]
    prompts = [list(range(100 + 7 * i, 130 + 7 * i)) for i in range(4)]
    together = small.generate(prompts, params)
    assert sum(o.lifecycle.num_preemptions for o in together) > 0
    for p, sp, o in zip(prompts, params, together, strict=True):
        assert small.generate([p], sp)[0].token_ids == o.token_ids


def test_different_seeds_differ(llm):
    outs = [gen(llm, [PROMPTS[2]], max_tokens=16, temperature=1.0, seed=s,
                ignore_eos=True)[0].token_ids for s in range(4)]
    assert len({tuple(o) for o in outs}) == 4


# --- stopping -----------------------------------------------------------------------------
def test_max_tokens(llm):
    outs = llm.generate(PROMPTS[:3], [SamplingParams(max_tokens=n, temperature=0,
                                                     ignore_eos=True) for n in (1, 7, 13)])
    assert [len(o.token_ids) for o in outs] == [1, 7, 13]
    assert all(o.finish_reason == "length" and o.finished for o in outs)


@pytest.fixture(scope="module")
def free_run(llm):
    """A greedy run with no stop: (output, per-token texts)."""
    out = gen(llm, [PROMPTS[0]], max_tokens=24, temperature=0, ignore_eos=True)[0]
    pieces = [llm.tokenizer.decode([t]) for t in out.token_ids]
    assert "".join(pieces) == out.text
    return out, pieces


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_inside_a_token(llm, free_run, include):
    out, pieces = free_run
    k = next(i for i in range(3, len(pieces)) if len(pieces[i].strip()) >= 3)
    stop = pieces[k].strip()[:3]
    at = out.text.find(stop)
    res = gen(llm, [PROMPTS[0]], max_tokens=24, temperature=0, ignore_eos=True, stop=[stop],
              include_stop_str_in_output=include)[0]
    assert res.finish_reason == "stop"
    assert res.text == out.text[: at + (len(stop) if include else 0)]
    assert res.token_ids == out.token_ids[: len(res.token_ids)]
    assert len(res.token_ids) < len(out.token_ids)


def test_stop_string_across_tokens_earliest_wins(llm, free_run):
    out, pieces = free_run
    k = next(i for i in range(4, len(pieces) - 1)
             if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    across = pieces[k][-2:] + pieces[k + 1][:2]  # completes only with token k + 1
    later = pieces[k + 1]
    at = out.text.find(across)
    res = gen(llm, [PROMPTS[0]], max_tokens=24, temperature=0, ignore_eos=True,
              stop=[later, across])[0]
    assert res.finish_reason == "stop"
    assert res.text == out.text[: min(at, out.text.find(later))]


def test_stop_token_ids(llm, free_run):
    out, _ = free_run
    stop_id = out.token_ids[5]
    first = out.token_ids.index(stop_id)
    res = gen(llm, [PROMPTS[0]], max_tokens=24, temperature=0, ignore_eos=True,
              stop_token_ids=[stop_id, 50000])[0]
    assert res.finish_reason == "stop"
    assert res.token_ids == out.token_ids[: first + 1]


def test_eos_stops_unless_ignored(preln_ckpt):
    """Make EOS (id 2) the greedy choice everywhere: the final layer norm outputs a constant
    vector and EOS's (tied) embedding points along it."""
    llm = LLM(model=str(preln_ckpt), dtype="float32", device="cpu", kv_cache_memory=1 << 20,
              max_model_len=512)
    d = llm.client.local_worker().model.decoder
    with torch.no_grad():
        v = torch.randn(d.final_layer_norm.bias.shape, generator=torch.Generator().manual_seed(0))
        d.final_layer_norm.weight.zero_()
        d.final_layer_norm.bias.copy_(v)
        d.embed_tokens.weight[2] = 10 * v / v.norm()
    eos = llm.tokenizer.eos_token_id
    assert eos == 2
    stopped = gen(llm, PROMPTS[:2], max_tokens=6, temperature=0)
    assert all(o.token_ids == [eos] and o.finish_reason == "stop" for o in stopped)
    assert all(o.text == "" for o in stopped)
    kept = gen(llm, PROMPTS[:2], max_tokens=6, temperature=0, ignore_eos=True)
    assert all(o.token_ids == [eos] * 6 and o.finish_reason == "length" for o in kept)


# --- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(max_tokens=0), dict(temperature=-0.1), dict(top_p=0.0),
                                dict(top_p=1.01), dict(top_k=-1), dict(stop=[""]),
                                dict(stop="")])
def test_invalid_sampling_params(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)


def test_stop_may_be_one_string():
    assert SamplingParams(stop="###").stop == ["###"]


def test_mismatched_params_list(llm):
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        llm.generate(PROMPTS[:3], [SamplingParams(), SamplingParams()])


# --- the sampler function's statistics ----------------------------------------------------
LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
N_DRAWS = 20_000


def draw(params: SamplingParams, n: int = N_DRAWS, seeded: bool = False) -> torch.Tensor:
    """``n`` tokens for LOGITS: a batch of n identical rows (one generator), or with
    ``seeded`` n single draws with seeds 0..n-1."""
    if seeded:
        ps = tuple(SamplingParams(temperature=params.temperature, top_k=params.top_k,
                                  top_p=params.top_p, seed=s) for s in range(n))
        return torch.tensor(sample(LOGITS.expand(n, -1), ps, (0,) * n))
    gen_ = torch.Generator().manual_seed(0)
    return torch.tensor(sample(LOGITS.expand(n, -1), (params,) * n, (0,) * n, gen_))


def assert_frequencies(tokens: torch.Tensor, probs: torch.Tensor) -> None:
    freq = torch.bincount(tokens, minlength=len(probs)).float() / len(tokens)
    sigma = (probs * (1 - probs) / len(tokens)).sqrt()
    assert torch.all((freq - probs).abs() <= 5 * sigma + 1e-3), (freq, probs)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampler_frequencies_follow_softmax(temperature):
    tokens = draw(SamplingParams(temperature=temperature))
    assert_frequencies(tokens, torch.softmax(LOGITS / temperature, dim=0))


def test_sampler_seeded_draws_follow_softmax():
    tokens = draw(SamplingParams(temperature=0.8), n=5000, seeded=True)
    assert_frequencies(tokens, torch.softmax(LOGITS / 0.8, dim=0))


def test_sampler_top_k():
    tokens = draw(SamplingParams(temperature=1.0, top_k=3))
    assert set(tokens.tolist()) <= {0, 1, 2}
    probs = torch.softmax(LOGITS[:3], dim=0)
    assert_frequencies(tokens, torch.cat([probs, torch.zeros(5)]))


def test_sampler_top_p():
    p = torch.softmax(LOGITS, dim=0)  # 0.37, 0.23, 0.14, 0.08, ...
    keep = int((torch.cumsum(p, 0) - p < 0.7).sum())  # smallest prefix with mass >= 0.7
    assert keep == 3
    tokens = draw(SamplingParams(temperature=1.0, top_p=0.7))
    assert set(tokens.tolist()) <= set(range(keep))
    assert_frequencies(tokens, torch.cat([p[:keep] / p[:keep].sum(), torch.zeros(8 - keep)]))


def test_sampler_top_k_and_top_p_together_and_greedy_rows():
    params = (SamplingParams(temperature=1.0, top_k=2, top_p=0.99),
              SamplingParams(temperature=0.0),
              SamplingParams(temperature=3.0, top_p=0.5))
    rows = torch.stack([LOGITS, LOGITS.flip(0), LOGITS])
    gen_ = torch.Generator().manual_seed(1)
    seen = [set(), set(), set()]
    for _ in range(300):
        for i, t in enumerate(sample(rows, params, (0, 0, 0), gen_)):
            seen[i].add(t)
    assert seen[0] == {0, 1}
    assert seen[1] == {7}  # greedy row: argmax of the flipped logits
    p3 = torch.softmax(LOGITS / 3.0, dim=0)
    kept = int((torch.cumsum(p3, 0) - p3 < 0.5).sum())
    assert seen[2] <= set(range(kept)) and len(seen[2]) == kept


def test_sampler_seed_and_output_index_decide_the_noise():
    params = (SamplingParams(temperature=5.0, seed=42),)
    row = LOGITS.unsqueeze(0)
    same = {sample(row, params, (3,))[0] for _ in range(20)}
    assert len(same) == 1
    by_index = [sample(row, params, (i,))[0] for i in range(200)]
    assert len(set(by_index)) >= 6  # a fresh draw for every output position
