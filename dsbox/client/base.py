"""EngineClient: the one door every front end (LLM, TUI, server, bench) uses.

Submit a request and receive its outputs (a callback, an async stream, or a blocking
batch), abort it, read a stats snapshot, the health and the log of finished requests, and
close. Whether the instances run in this process or in worker processes is the engine's
business: a front end holds an ``EngineClient`` and never asks which.

What a front end may read about the engine is declared here: the attributes of
:class:`EngineClient` (config, model shapes, tokenizer, placement, length limit) and
:meth:`EngineClient.info` (:class:`EngineInfo`: the model, where its weights came from, the
dtype, the device, the placement, as text). Nothing else of an implementation is read.

Every method may be called from any thread. Bad input (an empty prompt, token ids outside
the vocabulary, a prompt longer than the model's limit) raises ``ValueError`` at
submission, before anything is queued.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from dsbox.config import EngineConfig, ModelSpec
from dsbox.config.placement import Placement
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.model.tokenizer import Tokenizer
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.stats import EngineStats, Health
from dsbox.metrics.steps import PullRecord, StepRecord

OutputCallback = Callable[[RequestOutput], None]
Prompt = str | Sequence[int]


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What was loaded and where it runs, for a front end to show."""

    model: str          # the model's name (registry name, or the checkpoint folder's)
    source: str         # where its weights came from ("bundled checkpoint ...", "dummy ...")
    dtype: str          # "float32", "float16" or "bfloat16"
    device: str         # "cpu", "cuda" or "cuda:N"
    placement: str      # text form, devices assigned


class EngineClient(ABC):
    """What a front end can do with an engine. See :func:`dsbox.client.open_engine`."""

    config: EngineConfig
    spec: ModelSpec
    tokenizer: Tokenizer
    placement: Placement
    max_model_len: int

    # --- requests ------------------------------------------------------------------------
    @abstractmethod
    def submit(self, prompt: Prompt, params: SamplingParams, on_output: OutputCallback, *,
               arrival: float | None = None, tag: str = "") -> int:
        """Queue a request; ``on_output`` gets every update (from the engine's thread; it
        must not block). ``arrival`` (``time.monotonic()`` seconds) backdates the request
        (a trace replay); ``tag`` labels it in the finished log. Returns its id."""

    @abstractmethod
    def submit_batch(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams],
                     on_output: OutputCallback, *, tag: str = "") -> list[int]:
        """Queue several requests at once; all are validated before any is queued (an
        error names the prompt's index)."""

    @abstractmethod
    def abort(self, request_id: int) -> None:
        """End a request (its final output has finish reason ``abort``); its KV is freed.
        Unknown or finished ids are ignored."""

    # --- state ---------------------------------------------------------------------------
    @abstractmethod
    def info(self) -> EngineInfo:
        """The model, its weights' source, dtype, device and placement."""

    @abstractmethod
    def stats(self) -> EngineStats:
        """A snapshot of every instance and the engine's counters."""

    @abstractmethod
    def health(self) -> Health:
        """Whether every instance serves; which do not and why."""

    @abstractmethod
    def finished_since(self, cursor: int = 0) -> tuple[list[RequestRecord], int]:
        """Requests finished after ``cursor`` (oldest first; the log keeps the last few
        thousand) and the cursor to pass next time."""

    @abstractmethod
    def steps_since(self, cursor: int = 0) -> tuple[list[StepRecord], int]:
        """Steps every instance ran after ``cursor`` (oldest first; the log keeps the last
        ``STEP_LOG_SIZE``) and the cursor to pass next time."""

    @abstractmethod
    def pulls_since(self, cursor: int = 0) -> tuple[list[PullRecord], int]:
        """KV pulls the decode instances completed after ``cursor`` (oldest first; the log
        keeps the last ``PULL_LOG_SIZE``) and the cursor to pass next time."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine (and every worker process). Idempotent."""

    # --- built on the above --------------------------------------------------------------
    async def stream(self, prompt: Prompt, params: SamplingParams, *,
                     tag: str = "") -> AsyncIterator[RequestOutput]:
        """Async iterator over a request's outputs (each carries ``new_text``); leaving it
        early (break, cancel, an exception) aborts the request."""
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()

        def push(out: RequestOutput) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(outputs.put_nowait, out)

        rid = self.submit(prompt, params, push, tag=tag)
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.abort(rid)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams
                 | Sequence[SamplingParams], *, tag: str = "",
                 timeout: float | None = None) -> list[RequestOutput]:
        """Blocking batch generation; outputs in prompt order."""
        prompts = list(prompts)
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        params = list(params)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        done: dict[int, RequestOutput] = {}
        cv = threading.Condition()

        def on_output(out: RequestOutput) -> None:
            if out.finished:
                with cv:
                    done[out.request_id] = out
                    cv.notify()

        rids = self.submit_batch(prompts, params, on_output, tag=tag)
        with cv:  # every request ends, with an error output if the engine fails
            if not cv.wait_for(lambda: len(done) == len(rids), timeout):
                for rid in rids:
                    self.abort(rid)
                raise TimeoutError(f"{len(rids) - len(done)} requests unfinished after "
                                   f"{timeout} s (aborted)")
        return [done[r] for r in rids]

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
