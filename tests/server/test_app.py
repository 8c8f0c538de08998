"""``make_app`` over an in-process engine, served by uvicorn in a thread: the API key, the
bound on waiting requests (429 with Retry-After), the default chat template with its stop
strings joined to the request's, and /health of an in-process engine."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest

from dsbox import SamplingParams
from dsbox.chat_template import ChatTemplate
from dsbox.client import open_engine
from dsbox.server.app import make_app
from dsbox.server.run import bind, url_of
from tests.server.conftest import PER_BLOCK, wait_until

KEY = "sekret"
NAME = "tiny"
MESSAGES = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def engine(preln_ckpt):
    # one sequence at a time: a request waits (no first token) while another runs
    with open_engine(model=str(preln_ckpt), dtype="float32", device="cpu",
                     kv_cache_memory=64 * PER_BLOCK, max_model_len=128,
                     max_num_seqs=1) as client:
        yield client


@pytest.fixture(scope="module")
def reply_stop(engine):
    """The greedy reply to MESSAGES under the default template, and a stop string from
    its middle (the template's own stop, so the server must add it to requests)."""
    prompt = ChatTemplate().render(MESSAGES)
    text = engine.generate([prompt], SamplingParams(max_tokens=20, temperature=0,
                                                    ignore_eos=True))[0].text
    return text, text[len(text) // 2: len(text) // 2 + 3]


@pytest.fixture(scope="module")
def app_url(engine, reply_stop):
    import uvicorn

    template = ChatTemplate(stop=(reply_stop[1],))  # the default patterns
    app = make_app(engine, model_name=NAME, chat_template=template, api_key=KEY,
                   max_waiting=2, poll_interval=0.2)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 30)
    yield app, url_of(sock)
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_api_key_guards_everything_but_health(app_url):
    app, url = app_url
    for path in ("/v1/models", "/metrics"):
        res = httpx.get(url + path)
        assert res.status_code == 401 and res.json()["error"]["code"] == "invalid_api_key"
        res = httpx.get(url + path, headers={"Authorization": "Bearer wrong"})
        assert res.status_code == 401 and "Incorrect API key" in res.json()["error"]["message"]
        assert httpx.get(url + path, headers={"Authorization": f"Bearer {KEY}"}).is_success
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key=KEY).models.list()] \
        == [NAME]
    health = httpx.get(url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert wait_until(lambda: "pids" in httpx.get(url + "/health").json()["instances"][0], 5)
    (inst,) = httpx.get(url + "/health").json()["instances"]
    assert inst["role"] == "colocated" and inst["pids"] == [] and inst["devices"] == ["cpu"]


def test_chat_default_template_and_its_stop(app_url, engine, reply_stop):
    _, url = app_url
    text, stop = reply_stop
    api = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    res = api.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=20,
                                      temperature=0, extra_body={"ignore_eos": True})
    assert res.usage.prompt_tokens == len(engine.tokenizer.encode(
        ChatTemplate().render(MESSAGES)))
    assert res.choices[0].finish_reason == "stop"
    assert res.choices[0].message.content == text[: text.find(stop)]


def test_full_waiting_queue_answers_429_with_retry_after(app_url, engine):
    app, url = app_url
    gate = app.state.server.gate
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": NAME, "prompt": "Once upon a time", "temperature": 0,
            "ignore_eos": True}

    async def scenario():
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            # A runs (the engine's only slot), B and C wait for their first token
            async with http.stream("POST", "/v1/completions",
                                   json=dict(body, max_tokens=110, stream=True)) as a:
                lines = a.aiter_lines()
                while not (await anext(lines)).startswith("data: {"):
                    pass
                waiting = [asyncio.create_task(http.post("/v1/completions",
                                                         json=dict(body, max_tokens=3)))
                           for _ in range(2)]
                deadline = time.monotonic() + 10
                while gate.num_waiting < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert gate.num_waiting == 2
                refused = await http.post("/v1/completions", json=dict(body, max_tokens=3))
                # A's stream closes here: its request is aborted, B and C run
            done = await asyncio.gather(*waiting)
            return refused, done

    refused, done = asyncio.run(scenario())
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    err = refused.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
    assert "2 requests are waiting" in err["message"]
    assert [r.status_code for r in done] == [200, 200]
    assert gate.num_waiting == 0
    assert wait_until(lambda: engine.stats().kv_blocks_used == 0, 5)
