"""RequestOutput: what a caller sees of one request (tokens, text, finish, lifecycle).

``finish_reason`` is None while it runs, then one of ``stop`` (EOS, a stop token or a stop
string), ``length`` (``max_tokens`` or the model's length limit), ``abort`` (aborted by the
caller) or ``error`` (``error`` then says what failed: a worker, an instance, the engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.metrics.lifecycle import Lifecycle


@dataclass(slots=True)
class RequestOutput:
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    lifecycle: Lifecycle
    error: str | None = None
    new_text: str = ""  # text added since the previous output of this request
    logprobs: list | None = None  # per output token (TokenLogprob), when asked for
