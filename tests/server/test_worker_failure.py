"""A worker of a running ``dsbox serve`` is SIGKILLed: the requests it held become 500s
(streams get an error event) within 5 s, ``/health`` keeps answering with that instance
marked unhealthy, new requests fail fast with the engine's reason, and the server still
stops cleanly, leaving no process behind. This server takes its API key from
``$DSBOX_API_KEY``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx

from tests.server.conftest import PER_BLOCK, TWO_INSTANCES, start_server, wait_until

NAME = "served-tiny"
KEY = "from-the-environment"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_killed_decode_worker_turns_its_requests_into_500s(preln_ckpt):
    srv = start_server([str(preln_ckpt), "--placement", TWO_INSTANCES, "--device", "cpu",
                        "--dtype", "float32", "--kv-cache-memory", str(400 * PER_BLOCK),
                        "--max-model-len", "1024", "--served-model-name", NAME],
                       api_key=KEY)
    auth = srv.headers
    try:
        assert "API key required" in srv.output()
        denied = httpx.post(srv.url + "/v1/completions", json={"model": NAME, "prompt": "x"})
        assert denied.status_code == 401
        assert wait_until(lambda: "pids" in httpx.get(srv.url + "/health").json()
                          ["instances"][1], 10)
        health = httpx.get(srv.url + "/health").json()
        assert health["status"] == "ok"
        prefill, decode = health["instances"]
        assert (prefill["role"], decode["role"]) == ("prefill", "decode")
        workers = prefill["pids"] + decode["pids"]
        body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 1000,
                "temperature": 0, "ignore_eos": True}
        results: dict[int, tuple[int, str, float]] = {}

        def whole(i: int) -> None:
            res = httpx.post(srv.url + "/v1/completions", json=body, headers=auth,
                             timeout=120)
            results[i] = (res.status_code, res.text, time.monotonic())

        def streamed(i: int) -> None:
            events = []
            with httpx.stream("POST", srv.url + "/v1/completions",
                              json=dict(body, stream=True), headers=auth,
                              timeout=120) as res:
                for line in res.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
            results[i] = (res.status_code, "\n".join(events[-2:]), time.monotonic())

        threads = [threading.Thread(target=whole, args=(i,)) for i in range(3)]
        threads.append(threading.Thread(target=streamed, args=(3,)))
        for t in threads:
            t.start()
        running = 'dsbox:instance_num_running{instance="1",role="decode"}'
        assert wait_until(lambda: srv.metrics()[running] == 4, 60), srv.metrics()
        killed_at = time.monotonic()
        os.kill(decode["pids"][0], signal.SIGKILL)
        for t in threads:
            t.join(30)
        assert len(results) == 4
        for i in range(3):
            status, text, done = results[i]
            assert status == 500, text
            err = json.loads(text)["error"]
            assert err["type"] == "server_error" and "decode instance 1 unhealthy" in \
                err["message"], err
            assert done - killed_at < 5
        status, events, done = results[3]
        assert status == 200 and done - killed_at < 5
        error_event, last = events.splitlines()
        assert "decode instance 1 unhealthy" in json.loads(error_event)["error"]["message"]
        assert last == "[DONE]"
        # /health keeps answering, with the decode instance marked unhealthy
        res = httpx.get(srv.url + "/health", timeout=10)
        assert res.status_code == 503
        health = res.json()
        assert health["status"] == "unhealthy"
        assert health["instances"][0]["healthy"] is True
        assert health["instances"][1]["healthy"] is False
        assert "worker process exited" in health["instances"][1]["error"]
        # a new request fails fast, saying why
        t0 = time.monotonic()
        res = httpx.post(srv.url + "/v1/completions", json=dict(body, max_tokens=4),
                         headers=auth, timeout=30)
        assert res.status_code == 500 and time.monotonic() - t0 < 5
        assert "no healthy decode instance" in res.json()["error"]["message"]
        assert srv.metrics()['dsbox:instance_healthy{instance="1",role="decode"}'] == 0
    finally:
        code = srv.stop()
    assert code == 0, srv.output()
    assert wait_until(lambda: not any(_alive(p) for p in workers), 10)
