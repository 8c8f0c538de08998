"""The offline API: ``LLM(model=...).generate(prompts, SamplingParams(...))``.

A thin blocking layer over the engine client (:mod:`dsbox.client`): ``generate`` for a
batch, ``stream`` for one request's outputs as they come, ``abort`` to end one. Without a
placement the engine runs in this process (one device, colocated); with one
(``placement="prefill:tp=2;decode:tp=1"``) worker processes run its instances, so create
it under ``if __name__ == "__main__":`` in a script, and ``close()`` it (or use
``with LLM(...) as llm:``).
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence

from dsbox.client import EngineClient, open_engine
from dsbox.config import DEFAULT_MODEL, EngineConfig
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.metrics.stats import EngineStats

Prompt = str | Sequence[int]


class LLM:
    """Offline generation. Keyword arguments are ``EngineConfig`` fields."""

    def __init__(self, model: str = DEFAULT_MODEL, **kwargs) -> None:
        unknown = set(kwargs) - set(EngineConfig.field_names())
        if unknown:
            raise TypeError(f"unknown LLM argument(s): {', '.join(sorted(unknown))}")
        self.config = EngineConfig(model=model, **kwargs)
        self.client: EngineClient = open_engine(self.config)
        self.tokenizer = self.client.tokenizer

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
                 ) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs in prompt order. All
        prompts are validated before any is queued: a bad one raises ValueError."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        return self.client.generate(list(prompts), sampling_params or SamplingParams())

    def stream(self, prompt: Prompt, sampling_params: SamplingParams | None = None
               ) -> Iterator[RequestOutput]:
        """Yield the request's outputs as they come (``new_text`` holds each delta);
        closing the iterator early aborts the request."""
        outputs: queue.Queue[RequestOutput] = queue.Queue()
        rid = self.client.submit(prompt, sampling_params or SamplingParams(), outputs.put)
        finished = False
        try:
            while not finished:
                out = outputs.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.client.abort(rid)

    def abort(self, request_id: int) -> None:
        self.client.abort(request_id)

    def stats(self) -> EngineStats:
        return self.client.stats()

    def close(self) -> None:
        """Stop the engine and its worker processes, if any."""
        self.client.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
