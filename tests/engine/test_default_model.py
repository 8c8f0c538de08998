"""The bundled default model (dsbox-chat): shipped in HF layout inside the package, loaded by
the same loader as real OPT checkpoints with transformers' logits, OPT's special token ids,
and greedy chat replies in English words (which random weights of its shapes do not give)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from dsbox import LLM, SamplingParams
from dsbox.chat_template import ChatTemplate
from dsbox.config import DEFAULT_MODEL, get_model_spec
from dsbox.engine.core.scheduler import Phase
from dsbox.engine.core.sequence import Sequence
from dsbox.engine.core.step_batch import build_step_batch
from dsbox.engine.model.source import resolve_model
from dsbox.engine.model.tokenizer import OPT_SPECIAL_TOKENS, load_tokenizer
from dsbox.metrics.lifecycle import Lifecycle
from tests.checkpoints import load_hf
from tests.engine.direct import direct

MAX_BYTES = 40 * 1000 * 1000
QUESTIONS = ("What is the capital of France?", "Hello! How are you today?",
             "Can you give me three tips for a good night's sleep?")
# The most frequent English words (function words and everyday verbs and nouns): a reply
# made of readable sentences has many of them; byte noise and random subwords have none.
COMMON_WORDS = frozenset("""
a about after all also am an and any are as at be because been being but by can could do
does don't each for from get give good have has help here how i i'm if in into is it it's
its just know like make many may me more most my need new no not now of on one or other our
out over people please some so such sure than thank thanks that the their them then there
these they this those time to up us use very was way we well were what when where which
while who will with would you your yes best day good great important help here one two three
first also different make sure can like it's that's there's let you're i'll here's sorry
""".split())


@pytest.fixture(scope="module")
def spec():
    return get_model_spec(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def llm():
    return LLM(model=DEFAULT_MODEL, dtype="float32", device="cpu", kv_cache_memory=16 << 20)


def chat_prompt(question: str) -> str:
    return ChatTemplate().render([{"role": "user", "content": question}])


def english_share(text: str) -> float:
    """Share of the whitespace-separated words of ``text`` that are common English words."""
    words = [re.sub(r"^[^\w']+|[^\w']+$", "", w).lower() for w in text.split()]
    words = [w for w in words if w]
    return sum(w in COMMON_WORDS for w in words) / max(len(words), 1)


def test_default_is_the_bundled_checkpoint(spec, monkeypatch, tmp_path):
    monkeypatch.setenv("DSBOX_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "none"))
    assert DEFAULT_MODEL == "dsbox-chat" and spec.bundled and spec.path
    directory = spec.bundled_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (directory / name).is_file(), name
    assert sum(f.stat().st_size for f in directory.iterdir()) <= MAX_BYTES
    source = resolve_model(DEFAULT_MODEL)
    assert source.weights_dir == directory and source.tokenizer_dir == directory
    assert "bundled" in source.where and source.spec.name == DEFAULT_MODEL
    assert source.spec.vocab_size == spec.vocab_size <= 8192
    # the registry takes the shapes from the shipped config.json
    config = json.loads((directory / "config.json").read_text())
    assert (spec.hidden_size, spec.num_layers, spec.max_position_embeddings) == (
        config["hidden_size"], config["num_hidden_layers"], config["max_position_embeddings"])


def test_tokenizer_has_opt_special_ids(spec):
    tok = load_tokenizer(spec.bundled_dir)
    assert [tok.token_to_id(t) for t in OPT_SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 2, 1)
    assert tok.vocab_size == spec.vocab_size
    ids = tok.encode("User: Hi\nAssistant: Hello.</s>\n")
    assert ids[0] == 2 and ids.count(2) == 2  # BOS, and the EOS of the finished turn
    assert tok.decode(ids) == "User: Hi\nAssistant: Hello.\n"
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(spec.bundled_dir)
    text = chat_prompt(QUESTIONS[2])
    assert hf(text).input_ids == tok.encode(text)  # transformers adds BOS like OPT's


def _prefill_logits(llm: LLM, prompts: list[list[int]]) -> list[torch.Tensor]:
    runner, scheduler = direct(llm)
    seqs = {}
    for i, p in enumerate(prompts):
        seq = Sequence(500 + i, p, SamplingParams(max_tokens=1, temperature=0),
                       Lifecycle(0.0), eos_token_id=2)
        scheduler.add(seq, 0.0)
        seqs[seq.seq_id] = seq
    out = scheduler.schedule(0.0)
    assert out.phase is Phase.PREFILL and len(out.seqs) == len(prompts)
    logits = runner.logits(build_step_batch(out, seqs)).float()
    for sid in seqs:
        scheduler.abort(sid, 0.0)
    return list(logits.split([len(p) for p in prompts]))


def test_logits_and_greedy_equal_transformers(spec, llm):
    hf = load_hf(spec.bundled_dir)
    prompts = [llm.tokenizer.encode(chat_prompt(q)) for q in QUESTIONS]
    with torch.no_grad():
        for got, p in zip(_prefill_logits(llm, prompts), prompts, strict=True):
            ref = hf(torch.tensor([p])).logits[0]
            assert (got - ref).abs().max().item() <= 1e-4
        max_new = 16
        outs = llm.generate(prompts, SamplingParams(max_tokens=max_new, temperature=0,
                                                    ignore_eos=True))
        for p, o in zip(prompts, outs, strict=True):
            ref = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p),
                              dtype=torch.long), max_new_tokens=max_new,
                              min_new_tokens=max_new, do_sample=False, eos_token_id=None,
                              pad_token_id=1)
            assert o.token_ids == ref[0, len(p):].tolist()


def _replies(model_llm: LLM) -> list[str]:
    template = ChatTemplate()
    params = SamplingParams(max_tokens=32, temperature=0, stop=list(template.stop))
    outs = model_llm.generate([chat_prompt(q) for q in QUESTIONS], params)
    return [o.text for o in outs]


def test_greedy_chat_replies_are_english(llm):
    replies = _replies(llm)
    for question, reply in zip(QUESTIONS, replies, strict=True):
        words = reply.split()
        assert len(words) >= 3, (question, reply)
        assert "\ufffd" not in reply, (question, reply)
        assert english_share(reply) >= 0.3, (question, reply)
    assert sum(english_share(r) for r in replies) / len(replies) >= 0.4, replies


def test_random_weights_fail_the_english_check():
    """The check above is real: the same shapes and tokenizer with random weights fail it."""
    dummy = LLM(model=DEFAULT_MODEL, dummy_weights=True, dtype="float32", device="cpu",
                kv_cache_memory=16 << 20)
    replies = _replies(dummy)
    assert sum(english_share(r) for r in replies) / len(replies) < 0.1, replies
