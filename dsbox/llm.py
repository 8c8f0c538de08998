"""The offline API: ``LLM(model=...).generate(prompts, SamplingParams(...))``.

Without a placement the engine runs in this process (one device, colocated). With one
(``placement="prefill:tp=2;decode:tp=1"``) a Controller starts one worker process per
device and routes the requests through its instances; ``close()`` (or ``with LLM(...)``)
stops them.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsbox.config import DEFAULT_MODEL, EngineConfig
from dsbox.engine.request_output import RequestOutput
from dsbox.engine.sampling_params import SamplingParams


class LLM:
    """Offline batched generation. Keyword arguments are ``EngineConfig`` fields."""

    def __init__(self, model: str = DEFAULT_MODEL, **kwargs) -> None:
        unknown = set(kwargs) - set(EngineConfig.field_names())
        if unknown:
            raise TypeError(f"unknown LLM argument(s): {', '.join(sorted(unknown))}")
        self.config = EngineConfig(model=model, **kwargs)
        self.engine = None
        self.controller = None
        if self.config.placement is None:
            from dsbox.engine.llm_engine import LLMEngine

            self.engine = LLMEngine(self.config)
            self.tokenizer = self.engine.tokenizer
        else:
            from dsbox.engine.controller import Controller

            self.controller = Controller(self.config, self.config.placement)
            self.tokenizer = self.controller.tokenizer

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
                 ) -> list[RequestOutput]:
        """Generate for every prompt; outputs in prompt order. All prompts are validated
        before any is queued, so a bad one raises ValueError and nothing runs."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        if self.controller is not None:
            return self.controller.generate(prompts, params)
        engine = self.engine
        encoded = engine.tracker.encode_prompts(prompts)
        ids = [engine._add(text, toks, sp, None)
               for (text, toks), sp in zip(encoded, params, strict=True)]
        results: dict[int, RequestOutput] = {}
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    results[out.request_id] = out
        return [results[i] for i in ids]

    def close(self) -> None:
        """Stop the worker processes (a no-op for the in-process engine)."""
        if self.controller is not None:
            self.controller.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
