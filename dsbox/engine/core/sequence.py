"""Sequence: one request as the schedulers and runners see it.

The schedulers read only counts (``num_tokens``, ``num_computed_tokens``...) so the
simulator can drive the same scheduler classes with a ``range`` standing in for the prompt.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence as SeqType
from dataclasses import dataclass, field

from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.metrics.lifecycle import Lifecycle


class SequenceStatus(enum.Enum):
    WAITING = "waiting"            # queued for prefill (also after a preemption)
    PREFILLED = "prefilled"        # prefill done on a prefill instance; KV held until pulled
    PENDING_PULL = "pending_pull"  # known to a decode instance, KV not pulled yet
    RUNNING = "running"            # in the decode batch
    FINISHED = "finished"


class FinishReason(enum.Enum):
    LENGTH = "length"
    STOP = "stop"
    ABORT = "abort"
    ERROR = "error"


@dataclass(slots=True, eq=False)
class Sequence:
    """A request's tokens and state. ``prompt_token_ids`` may be any sized sequence."""

    seq_id: int
    prompt_token_ids: SeqType[int]
    params: SamplingParams
    lifecycle: Lifecycle
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0
    finish_reason: FinishReason | None = None
    eos_token_id: int | None = None
    logprobs: list | None = None  # one entry per output token when params.logprobs is set

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def last_token_id(self) -> int:
        if self.output_token_ids:
            return self.output_token_ids[-1]
        return self.prompt_token_ids[-1]

    def token_ids_from(self, start: int) -> list[int]:
        """Token ids at positions ``start..num_tokens-1`` (prompt then output)."""
        n_prompt = len(self.prompt_token_ids)
        if start >= n_prompt:
            return self.output_token_ids[start - n_prompt:]
        return list(self.prompt_token_ids[start:]) + self.output_token_ids

    def append_token(self, token_id: int, now: float, logprob=None) -> None:
        self.output_token_ids.append(token_id)
        self.lifecycle.token_times.append(now)
        if logprob is not None:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.append(logprob)

    def check_stop(self) -> FinishReason | None:
        """Stop conditions that need no text: length, EOS, stop token ids."""
        if not self.output_token_ids:
            return None
        last = self.output_token_ids[-1]
        if not self.params.ignore_eos and last == self.eos_token_id:
            return FinishReason.STOP
        if last in self.params.stop_token_ids:
            return FinishReason.STOP
        if len(self.output_token_ids) >= self.params.max_tokens:
            return FinishReason.LENGTH
        return None
