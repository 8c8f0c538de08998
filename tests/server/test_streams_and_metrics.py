"""Streams under load, clients that leave, and /metrics, on a real ``dsbox serve``: 200
concurrent streams all complete intact; a client that disconnects (mid-stream, or while
waiting for a whole answer) aborts its requests and their KV blocks are freed; /metrics
parses with prometheus_client's parser and its histograms count every finished request."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.server.conftest import idle, wait_until

NUM_STREAMS = 200


def test_200_concurrent_streams_complete_intact(server, model_name):
    prompts = [f"Request number {i} says:" for i in range(NUM_STREAMS)]
    kw = dict(model=model_name, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    sync = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)
    # the reference: the same prompts, not streamed, in one request
    whole = sync.completions.create(prompt=prompts, **kw)
    expected = [c.text for c in sorted(whole.choices, key=lambda c: c.index)]
    assert whole.usage.completion_tokens == 12 * NUM_STREAMS

    async def one(api: openai.AsyncOpenAI, prompt: str) -> tuple[str, int, str | None]:
        stream = await api.completions.create(prompt=prompt, stream=True, **kw)
        text, chunks, finish = "", 0, None
        async for chunk in stream:
            assert chunk.model == model_name
            text += chunk.choices[0].text
            chunks += 1
            finish = chunk.choices[0].finish_reason or finish
        return text, chunks, finish

    async def all_of_them():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                      max_retries=0, timeout=300) as api:
            return await asyncio.gather(*(one(api, p) for p in prompts))

    results = asyncio.run(all_of_them())
    assert len(results) == NUM_STREAMS
    assert [r[2] for r in results] == ["length"] * NUM_STREAMS
    assert [r[0] for r in results] == expected  # none lost, none garbled or mixed up
    assert all(r[1] > 2 for r in results)
    assert wait_until(lambda: idle(server), 30)


def test_disconnect_mid_stream_aborts_and_frees_kv(server, model_name):
    aborted = server.metrics()['dsbox:request_success_total{finished_reason="abort"}']
    body = {"model": model_name, "prompt": "Once upon a time", "max_tokens": 110,
            "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as res:
            assert res.status_code == 200
            got = 0
            for line in res.iter_lines():
                got += line.startswith("data: {")
                if got == 3:
                    break  # leaving the block closes the connection mid-stream
        assert got == 3
    key = 'dsbox:request_success_total{finished_reason="abort"}'
    assert wait_until(lambda: server.metrics()[key] == aborted + 1, 10)
    assert wait_until(lambda: idle(server), 10)


def test_disconnect_while_waiting_for_a_whole_answer_aborts(server, model_name):
    key = 'dsbox:request_success_total{finished_reason="abort"}'
    aborted = server.metrics()[key]
    body = {"model": model_name, "prompt": "Once upon a time", "max_tokens": 110, "n": 4,
            "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(
            10, read=0.15))
    assert wait_until(lambda: server.metrics()[key] == aborted + 4, 10)
    assert wait_until(lambda: idle(server), 10)


def _count(m: dict, name: str) -> float:
    return m[f"dsbox:{name}_count"]


def test_metrics_parse_and_count_every_finished_request(server, model_name):
    assert wait_until(lambda: idle(server), 30)
    before = server.metrics()
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
    usages = []
    for i in range(3):
        res = api.completions.create(model=model_name, prompt=f"Metrics {i}", max_tokens=5 + i,
                                     temperature=0, extra_body={"ignore_eos": True})
        usages.append(res.usage)
    chat = api.chat.completions.create(model=model_name, max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={"ignore_eos": True})
    usages.append(chat.usage)
    stream = api.completions.create(model=model_name, prompt="Streamed", max_tokens=6,
                                    temperature=0, stream=True,
                                    stream_options={"include_usage": True},
                                    extra_body={"ignore_eos": True})
    usages.append([c for c in stream][-1].usage)
    assert wait_until(lambda: idle(server), 10)
    after = server.metrics()
    d = {k: after[k] - before.get(k, 0) for k in after}
    n = len(usages)
    finished = sum(v for k, v in d.items() if k.startswith("dsbox:request_success_total"))
    assert finished == n
    assert _count(d, "time_to_first_token_seconds") == finished
    for name in ("e2e_request_latency_seconds", "request_queue_time_seconds",
                 "request_time_per_output_token_seconds", "request_prompt_tokens",
                 "kv_transfer_time_seconds", "kv_transfer_bytes"):
        assert _count(d, name) == n, name
    tokens = sum(u.completion_tokens for u in usages)
    assert _count(d, "inter_token_latency_seconds") == tokens - n
    assert d["dsbox:generation_tokens_total"] == tokens
    assert d["dsbox:request_generation_tokens_sum"] == tokens
    assert d["dsbox:prompt_tokens_total"] == sum(u.prompt_tokens for u in usages)
    assert d['dsbox:request_success_total{finished_reason="length"}'] == n
    assert d["dsbox:kv_transfer_bytes_sum"] > 0
    moved_in = d['dsbox:instance_kv_transfer_bytes_total{direction="in",instance="1",'
                 'role="decode"}']
    assert moved_in == d["dsbox:kv_transfer_bytes_sum"]
    assert after['dsbox:instance_healthy{instance="0",role="prefill"}'] == 1
    assert after['dsbox:instance_kv_blocks_total{instance="1",role="decode"}'] > 0
    assert 0 <= after["dsbox:kv_cache_usage_perc"] <= 1
    # each histogram's buckets are cumulative and end at its count
    inf = after['dsbox:time_to_first_token_seconds_bucket{le="+Inf"}']
    assert inf == after["dsbox:time_to_first_token_seconds_count"]
