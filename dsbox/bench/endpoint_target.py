"""Any OpenAI-compatible server as a bench target (dsbox serve, vLLM, SGLang).

Each request is a streaming ``POST /v1/completions`` sent at its arrival time, with
``max_tokens`` = its output length and ``ignore_eos`` (vLLM's and SGLang's extension) so it
generates exactly that many tokens; ``stream_options.include_usage`` asks for the token
counts. The client stamps, on its own clock: arrival (when the request was due), each
streamed chunk that carries a choice, and the finish. A chunk stands for one token, or for
as many as its ``logprobs.tokens`` lists; a server may hold a token back until its text is
whole and send it with the next, so when the usage counts more tokens than the chunks did,
the missing ones are stamped at the last chunk: TPOT is then (last - first token) /
(tokens - 1), as ``vllm bench serve`` computes it from the usage. Queueing, prefill and
transfer happen inside the server and are not seen: those stamps stay empty, so the
five-stage breakdown is left out for endpoint runs.
Prompts are sent as text, or as token ids for a trace that has only lengths.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit, urlunsplit

from dsbox.bench.targets import ENDPOINT, Progress, shifted
from dsbox.bench.workload import prompts_of
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.workloads import Trace

LEAD_S = 0.05
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0     # longest silence inside one streamed response
COMPLETIONS = "/v1/completions"
MODELS = "/v1/models"


def endpoint_urls(url: str) -> tuple[str, str]:
    """(completions URL, models URL) from a base URL (``http://host:port``, optionally
    ending in ``/v1``) or the completions URL itself. ValueError when it is not http(s)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint {url!r}: expected an http(s) URL such as "
                         "http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    for suffix in (COMPLETIONS, "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break

    def make(p: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, path + p, "", ""))

    return make(COMPLETIONS), make(MODELS)


class EndpointTarget:
    """Replays traces against an OpenAI-compatible completions endpoint."""

    kind = ENDPOINT

    def __init__(self, url: str, *, model: str | None = None, placement: str = "",
                 num_gpus: int = 1, bos: int = 2, vocab_size: int = 50272) -> None:
        self.url = url
        self.completions_url, self.models_url = endpoint_urls(url)
        self.placement = placement
        self.num_gpus = num_gpus
        self.bos, self.vocab_size = bos, vocab_size
        self.model = asyncio.run(self._served_model(model))

    # --- reachability and the model name -------------------------------------------------
    async def _served_model(self, model: str | None) -> str:
        """The model to ask for: ``model``, else the first the server lists. ValueError
        when the server cannot be reached."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S * 2,
                                        sock_connect=CONNECT_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(self.models_url) as resp:
                if resp.status != 200:
                    if model:
                        return model
                    raise ValueError(f"endpoint {self.url}: GET {MODELS} answered "
                                     f"{resp.status}; name the model with --served-model")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ValueError(f"cannot reach the endpoint {self.url}: "
                             f"{exc.__class__.__name__}: {exc}".rstrip(": ")) from None
        if model:
            return model
        try:
            return str(data["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"endpoint {self.url}: GET {MODELS} lists no model; name it "
                             "with --served-model") from None

    # --- a run ---------------------------------------------------------------------------
    def run(self, trace: Trace, progress: Progress) -> list[RequestRecord]:
        return asyncio.run(self._run(trace, progress))

    async def _run(self, trace: Trace, progress: Progress) -> list[RequestRecord]:
        import aiohttp

        prompts = prompts_of(trace, self.bos, self.vocab_size)
        done = [0]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                        sock_read=READ_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=0)  # as many connections as requests
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            start = time.monotonic() + LEAD_S

            async def one(i: int) -> RequestRecord:
                due = start + trace.arrivals[i]
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                record = await self._request(session, i, prompts[i], trace, due)
                done[0] += 1
                progress(done[0])
                return shifted(record, start, i)

            return list(await asyncio.gather(*(one(i) for i in range(len(trace)))))

    async def _request(self, session, i: int, prompt, trace: Trace,
                       due: float) -> RequestRecord:
        import aiohttp

        body = {"model": self.model, "prompt": prompt, "max_tokens": trace.output_lens[i],
                "temperature": 0.0, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True}}
        lc = Lifecycle(arrival=due)
        usage: dict = {}
        reason = None
        error = None
        try:
            async with session.post(self.completions_url, json=body) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:200]
                    error = f"HTTP {resp.status}: {text}"
                else:
                    async for raw in resp.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[len("data:"):].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        now = time.monotonic()
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        choices = chunk.get("choices") or ()
                        if choices:
                            lc.token_times.extend([now] * _tokens_in(choices[0]))
                            reason = choices[0].get("finish_reason") or reason
                        if "error" in chunk:
                            error = str(chunk["error"])[:200]
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        lc.finish = time.monotonic()
        missing = int(usage.get("completion_tokens", 0)) - len(lc.token_times)
        if lc.token_times and missing > 0:  # held back by the server, sent with a later chunk
            lc.token_times.extend([lc.token_times[-1]] * missing)
        if error is None and not lc.token_times:
            error = "the stream ended without a token"
        finish = "error" if error is not None else (reason if reason in ("stop", "length")
                                                    else "length")
        return RequestRecord(i, int(usage.get("prompt_tokens", trace.prompt_lens[i])),
                             int(usage.get("completion_tokens", len(lc.token_times))),
                             finish, lc, "bench", 0, error)

    def close(self) -> None:
        pass


def _tokens_in(choice: dict) -> int:
    """Tokens a streamed choice carries: its logprobs' token count when it has them, else 1
    (a chunk without text still stands for a token, as vLLM's bench counts)."""
    tokens = (choice.get("logprobs") or {}).get("tokens")
    return len(tokens) if isinstance(tokens, list) and tokens else 1
