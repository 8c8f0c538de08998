"""The offline API: ``LLM(model=...).generate(prompts, SamplingParams(...))``."""

from __future__ import annotations

from collections.abc import Sequence

from dsbox.config import EngineConfig
from dsbox.engine.llm_engine import LLMEngine
from dsbox.engine.request_output import RequestOutput
from dsbox.engine.sampling_params import SamplingParams


class LLM:
    """Offline batched generation. Keyword arguments are ``EngineConfig`` fields."""

    def __init__(self, model: str = "opt-tiny", **kwargs) -> None:
        unknown = set(kwargs) - set(EngineConfig.field_names())
        if unknown:
            raise TypeError(f"unknown LLM argument(s): {', '.join(sorted(unknown))}")
        self.config = EngineConfig(model=model, **kwargs)
        self.engine = LLMEngine(self.config)
        self.tokenizer = self.engine.tokenizer

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
                 ) -> list[RequestOutput]:
        """Generate for every prompt; outputs in prompt order. All prompts are validated
        before any is queued, so a bad one raises ValueError and nothing runs."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        encoded = []
        for i, p in enumerate(prompts):
            try:
                encoded.append(self.engine.encode_prompt(p))
            except ValueError as exc:
                raise ValueError(f"prompt {i}: {exc}") from None
        engine = self.engine
        ids = [engine._add(text, toks, sp, None) for (text, toks), sp in zip(encoded, params,
                                                                              strict=True)]
        results: dict[int, RequestOutput] = {}
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    results[out.request_id] = out
        return [results[i] for i in ids]
