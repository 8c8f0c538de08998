"""A minimal OpenAI-compatible completions server over a real dsbox engine client, for
testing ``dsbox bench --endpoint`` until ``dsbox serve`` exists.

``GET /v1/models`` lists the model; ``POST /v1/completions`` with ``stream: true`` streams
one ``text_completion`` chunk per generated token (SSE ``data:`` lines), then a usage chunk
when ``stream_options.include_usage`` is set, then ``data: [DONE]``. It honours
``max_tokens``, ``temperature`` and ``ignore_eos`` (vLLM's extension) and accepts a prompt
as text or token ids. It runs on loopback in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

from aiohttp import web

from dsbox import SamplingParams


class CompletionsServer:
    """Serve ``client`` (an open EngineClient) as ``model`` on 127.0.0.1, a free port."""

    def __init__(self, client, model: str) -> None:
        self.client = client
        self.model = model
        self.port: int | None = None
        self.num_requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CompletionsServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "owned_by": "dsbox-test"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"error": {"message": "only stream=true"}}, status=400)
        if body.get("model") != self.model:
            return web.json_response({"error": {"message": "no such model"}}, status=404)
        self.num_requests += 1
        params = SamplingParams(max_tokens=int(body.get("max_tokens", 16)),
                                temperature=float(body.get("temperature", 1.0)),
                                ignore_eos=bool(body.get("ignore_eos", False)))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        rid = f"cmpl-{self.num_requests}"
        last = None
        seen = 0
        async for out in self.client.stream(body["prompt"], params):
            last = out
            if len(out.token_ids) == seen and not out.finished:
                continue
            seen = len(out.token_ids)
            chunk = {"id": rid, "object": "text_completion", "created": int(time.time()),
                     "model": self.model, "choices": [{
                         "index": 0, "text": out.new_text, "logprobs": None,
                         "finish_reason": out.finish_reason}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage") and last is not None:
            usage = {"prompt_tokens": len(last.prompt_token_ids),
                     "completion_tokens": len(last.token_ids),
                     "total_tokens": len(last.prompt_token_ids) + len(last.token_ids)}
            chunk = {"id": rid, "object": "text_completion", "model": self.model,
                     "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
