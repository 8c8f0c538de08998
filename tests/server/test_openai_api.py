"""The OpenAI API of a real ``dsbox serve`` (tiny model, prefill and decode workers on the
CPU), spoken to with the official ``openai`` client: completions, chat, streaming, usage,
stop strings, n, seeds, logprobs and the model list."""

from __future__ import annotations

import math
import tomllib

import openai
import pytest

from dsbox.chat_template import ChatTemplate
from dsbox.engine.model.tokenizer import load_tokenizer
from tests.server.conftest import CUSTOM_TEMPLATE

PROMPT = "The quick brown fox jumps over"


@pytest.fixture(scope="module")
def api(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=120)


@pytest.fixture(scope="module")
def tok(preln_ckpt):
    return load_tokenizer(preln_ckpt)


def complete(api, model_name, prompt=PROMPT, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 20)
    extra = {"ignore_eos": kw.pop("ignore_eos", True)}
    return api.completions.create(model=model_name, prompt=prompt, extra_body=extra, **kw)


def test_models_lists_the_served_model(api, model_name):
    models = api.models.list().data
    assert [m.id for m in models] == [model_name]
    assert api.models.retrieve(model_name).id == model_name
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("gpt-17")


def test_completion_text_usage_and_finish(api, model_name, tok):
    res = complete(api, model_name, max_tokens=12)
    assert res.model == model_name and res.object == "text_completion"
    (choice,) = res.choices
    assert choice.finish_reason == "length" and choice.text
    assert res.usage.prompt_tokens == len(tok.encode(PROMPT))
    assert res.usage.completion_tokens == 12
    assert res.usage.total_tokens == res.usage.prompt_tokens + 12
    # token ids in, the same greedy completion out
    again = complete(api, model_name, prompt=tok.encode(PROMPT), max_tokens=12)
    assert again.choices[0].text == choice.text


def test_streamed_completion_equals_the_whole_one(api, model_name):
    whole = complete(api, model_name, max_tokens=24).choices[0]
    chunks = list(complete(api, model_name, max_tokens=24, stream=True,
                           stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len([t for t in texts if t]) > 3, texts  # tokens arrive as separate chunks
    assert "".join(texts) == whole.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and not any(finishes[:-1])
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens == 24
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_strings_are_honoured(api, model_name):
    free = complete(api, model_name, max_tokens=30).choices[0].text
    stop = free[len(free) // 2: len(free) // 2 + 3]
    cut = free[: free.find(stop)]
    res = complete(api, model_name, max_tokens=30, stop=[stop]).choices[0]
    assert res.finish_reason == "stop" and res.text == cut
    streamed = complete(api, model_name, max_tokens=30, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut


def test_n_choices_and_seeds(api, model_name):
    res = complete(api, model_name, n=2, max_tokens=10, temperature=1.0, seed=7)
    assert [c.index for c in res.choices] == [0, 1]
    assert res.usage.completion_tokens == 20
    assert res.usage.prompt_tokens == complete(api, model_name, max_tokens=1).usage.prompt_tokens
    again = complete(api, model_name, n=2, max_tokens=10, temperature=1.0, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in res.choices]
    assert res.choices[0].text != res.choices[1].text  # seed, seed + 1
    single = complete(api, model_name, max_tokens=10, temperature=1.0, seed=8)
    assert single.choices[0].text == res.choices[1].text
    greedy = complete(api, model_name, n=2, max_tokens=10)
    assert greedy.choices[0].text == greedy.choices[1].text
    # two prompts, two choices each: ordered by prompt, then choice
    batch = complete(api, model_name, prompt=[PROMPT, "Hello"], n=2, max_tokens=5)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    hello = complete(api, model_name, prompt="Hello", max_tokens=5).choices[0].text
    assert [c.text for c in batch.choices[2:]] == [hello, hello]
    streamed = complete(api, model_name, n=2, max_tokens=10, temperature=1.0, seed=7,
                        stream=True)
    texts = {0: "", 1: ""}
    for chunk in streamed:
        for c in chunk.choices:
            texts[c.index] += c.text
    assert [texts[0], texts[1]] == [c.text for c in res.choices]


def test_completion_logprobs(api, model_name, tok):
    res = complete(api, model_name, max_tokens=6, logprobs=3)
    lp = res.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert all(v <= 0 and math.isfinite(v) for v in lp.token_logprobs)
    assert all(1 <= len(top) <= 3 for top in lp.top_logprobs)
    # greedy: the sampled token is the most likely one
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert max(top.values()) == pytest.approx(value, abs=1e-4)
        assert token in top
    assert "".join(lp.tokens) == res.choices[0].text
    assert lp.text_offset[0] == 0


def test_chat_uses_the_template_file(api, model_name, tok):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    res = api.chat.completions.create(model=model_name, messages=messages, max_tokens=8,
                                      temperature=0, extra_body={"ignore_eos": True})
    assert res.object == "chat.completion" and res.model == model_name
    (choice,) = res.choices
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    template = ChatTemplate.from_mapping(tomllib.loads(CUSTOM_TEMPLATE))
    assert res.usage.prompt_tokens == len(tok.encode(template.render(messages)))
    assert res.usage.prompt_tokens != len(tok.encode(ChatTemplate().render(messages)))
    assert 1 <= res.usage.completion_tokens <= 8


def test_streamed_chat_equals_the_whole_one(api, model_name):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour."}]
    kw = dict(model=model_name, messages=messages, max_completion_tokens=16, temperature=0,
              extra_body={"ignore_eos": True})
    whole = api.chat.completions.create(**kw)
    chunks = list(api.chat.completions.create(stream=True,
                                              stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 3
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_logprobs(api, model_name):
    res = api.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        temperature=0, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    content = res.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in content)
    assert all(e.top_logprobs[0].logprob == pytest.approx(e.logprob, abs=1e-4) for e in content)
