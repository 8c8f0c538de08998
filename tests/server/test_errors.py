"""Malformed requests to a real ``dsbox serve``: each gets its status and an OpenAI-shaped
error body (``{"error": {"message", "type", "param", "code"}}``), and the server goes on
serving. Sent with plain httpx, so the bodies are exactly as written here."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.server.conftest import idle, wait_until

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
MODEL = "@MODEL@"  # replaced by the served model's name
OK = {"model": MODEL, "prompt": "Hello", "max_tokens": 4}
CHAT_OK = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def body(base: dict, **changes) -> str:
    d = dict(base)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d)


# (method, path, body text, status, param, words in the message)
CASES = {
    "malformed JSON": ("POST", COMPLETIONS, '{"model": "x", "prompt": ', 400, None,
                       "malformed JSON"),
    "body not an object": ("POST", COMPLETIONS, "[1, 2]", 400, None, "JSON object"),
    "missing model": ("POST", COMPLETIONS, body(OK, model=...), 400, "model", "model"),
    "unknown model": ("POST", COMPLETIONS, body(OK, model="gpt-17"), 404, "model", "gpt-17"),
    "missing prompt": ("POST", COMPLETIONS, body(OK, prompt=...), 400, "prompt", "prompt"),
    "empty prompt": ("POST", COMPLETIONS, body(OK, prompt=""), 400, "prompt", "empty"),
    "empty prompt list": ("POST", COMPLETIONS, body(OK, prompt=[]), 400, "prompt", "empty"),
    "prompt of mixed types": ("POST", COMPLETIONS, body(OK, prompt=[1, "a"]), 400, "prompt",
                              "valid"),
    "token id outside the vocabulary": ("POST", COMPLETIONS, body(OK, prompt=[2, 10**9]),
                                        400, "prompt", "outside the vocabulary"),
    "max_tokens 0": ("POST", COMPLETIONS, body(OK, max_tokens=0), 400, "max_tokens", ">= 1"),
    "max_tokens a string": ("POST", COMPLETIONS, body(OK, max_tokens="5"), 400, "max_tokens",
                            "integer"),
    "max_tokens fractional": ("POST", COMPLETIONS, body(OK, max_tokens=2.5), 400,
                              "max_tokens", "integer"),
    "temperature negative": ("POST", COMPLETIONS, body(OK, temperature=-0.5), 400,
                             "temperature", ">= 0"),
    "temperature a string": ("POST", COMPLETIONS, body(OK, temperature="hot"), 400,
                             "temperature", "number"),
    "temperature NaN": ("POST", COMPLETIONS, body(OK).replace("}", ', "temperature": NaN}'),
                        400, "temperature", "finite"),
    "top_p 0": ("POST", COMPLETIONS, body(OK, top_p=0), 400, "top_p", "(0, 1]"),
    "top_p above 1": ("POST", COMPLETIONS, body(OK, top_p=1.5), 400, "top_p", "(0, 1]"),
    "seed fractional": ("POST", COMPLETIONS, body(OK, seed=1.5), 400, "seed", "integer"),
    "stream not a bool": ("POST", COMPLETIONS, body(OK, stream="yes"), 400, "stream",
                          "boolean"),
    "n 0": ("POST", COMPLETIONS, body(OK, n=0), 400, "n", "between 1"),
    "five stop strings": ("POST", COMPLETIONS, body(OK, stop=list("abcde")), 400, "stop",
                          "at most 4"),
    "logprobs above 20": ("POST", COMPLETIONS, body(OK, logprobs=21), 400, "logprobs",
                          "between 0 and 20"),
    "unknown field": ("POST", COMPLETIONS, body(OK, frobnicate=1), 400, "frobnicate",
                      "Unrecognized request argument"),
    "unsupported penalty": ("POST", COMPLETIONS, body(OK, presence_penalty=0.5), 400,
                            "presence_penalty", "not supported"),
    "beyond the context window": ("POST", COMPLETIONS, body(OK, max_tokens=200), 400,
                                  "prompt", "maximum context length is 128 tokens"),
    "chat without messages": ("POST", CHAT, body(CHAT_OK, messages=...), 400, "messages",
                              "messages"),
    "chat with no message": ("POST", CHAT, body(CHAT_OK, messages=[]), 400, "messages",
                             "empty"),
    "chat unknown role": ("POST", CHAT, body(CHAT_OK, messages=[{"role": "wizard",
                                                                 "content": "Hi"}]),
                          400, "messages", "role"),
    "chat content a number": ("POST", CHAT, body(CHAT_OK, messages=[{"role": "user",
                                                                     "content": 5}]),
                              400, "messages.0.content", "valid"),
    "chat unknown message field": ("POST", CHAT, body(CHAT_OK, messages=[
        {"role": "user", "content": "Hi", "mood": "x"}]), 400, "messages.0.mood",
        "Unrecognized"),
    "chat top_logprobs alone": ("POST", CHAT, body(CHAT_OK, top_logprobs=2), 400,
                                "top_logprobs", "logprobs"),
    "chat tools": ("POST", CHAT, body(CHAT_OK, tools=[{"type": "function"}]), 400, "tools",
                   "not supported"),
    "unknown route": ("GET", "/v1/nothing", "", 404, None, "Not Found"),
    "wrong method": ("GET", COMPLETIONS, "", 405, None, "Method Not Allowed"),
}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request(case, http, model_name):
    method, path, text, status, param, words = CASES[case]
    res = http.request(method, path, content=text.replace(MODEL, model_name),
                       headers={"Content-Type": "application/json"})
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param, err
    assert words in err["message"], err
    assert err["type"] == "invalid_request_error"


def test_context_window_error_names_both_numbers(http, model_name):
    prompt = [2] + [100] * 99  # 100 tokens
    res = http.post("/v1/completions", json={"model": model_name, "prompt": prompt,
                                             "max_tokens": 40})
    assert res.status_code == 400
    err = res.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert "maximum context length is 128 tokens" in err["message"]
    assert "(100 in the prompt, 40 for the completion)" in err["message"]
    # chat: the window's rest is the default, so only a prompt that leaves none fails
    res = http.post("/v1/chat/completions", json={
        "model": model_name, "messages": [{"role": "user", "content": "word " * 130}]})
    assert res.status_code == 400 and "maximum context length" in res.json()["error"]["message"]
    fits = http.post("/v1/completions", json={"model": model_name, "prompt": prompt,
                                              "max_tokens": 28, "temperature": 0})
    assert fits.status_code == 200, fits.text


def test_openai_client_raises_the_matching_errors(server, model_name):
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        api.completions.create(model=model_name, prompt="Hi", max_tokens=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_still_serving_after_the_errors(http, server, model_name):
    for _ in range(2):
        for method, path, text, *_ in CASES.values():
            http.request(method, path, content=text.replace(MODEL, model_name))
    res = http.post("/v1/completions", json={"model": model_name, "prompt": "Hello",
                                             "max_tokens": 5, "temperature": 0})
    assert res.status_code == 200 and res.json()["usage"]["completion_tokens"] == 5
    assert wait_until(lambda: idle(server), 10)
    errors = {k: v for k, v in server.metrics().items() if "http_request_errors_total" in k}
    assert errors['dsbox:http_request_errors_total{status="400"}'] >= 2 * 30
    assert errors['dsbox:http_request_errors_total{status="404"}'] >= 2
