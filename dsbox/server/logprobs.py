"""Log-probabilities in OpenAI's two shapes, from the engine's per-token ``TokenLogprob``s.

Completions: ``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``
(the legacy shape); chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``.
A token's string is its id decoded alone (a piece of a multi-byte character decodes to
U+FFFD, as in OpenAI's output). Logprobs are the model's raw distribution, before
temperature and filters; ``-inf`` is clamped to -9999.0 (JSON has no infinity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dsbox.engine.model.tokenizer import Tokenizer
from dsbox.server.protocol import ChatLogprobs, CompletionLogprobs, TokenLogprobEntry, TopLogprob

_FLOOR = -9999.0


def _lp(value: float) -> float:
    return value if math.isfinite(value) else _FLOOR


def _token(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def completion_logprobs(tokenizer: Tokenizer, token_ids: Sequence[int], logprobs: Sequence,
                        offset: int = 0) -> CompletionLogprobs:
    """The legacy shape for ``token_ids`` (with their ``TokenLogprob``s); ``offset`` is
    where their text starts in the choice's text."""
    out = CompletionLogprobs()
    for tid, lp in zip(token_ids, logprobs, strict=False):
        text = _token(tokenizer, tid)
        out.tokens.append(text)
        out.token_logprobs.append(_lp(lp.logprob))
        out.top_logprobs.append({_token(tokenizer, t): _lp(v) for t, v in lp.top})
        out.text_offset.append(offset)
        offset += len(text)
    return out


def chat_logprobs(tokenizer: Tokenizer, token_ids: Sequence[int],
                  logprobs: Sequence) -> ChatLogprobs:
    content = []
    for tid, lp in zip(token_ids, logprobs, strict=False):
        text = _token(tokenizer, tid)
        top = [TopLogprob(token=(t := _token(tokenizer, i)), logprob=_lp(v),
                          bytes=list(t.encode())) for i, v in lp.top]
        content.append(TokenLogprobEntry(token=text, logprob=_lp(lp.logprob),
                                         bytes=list(text.encode()), top_logprobs=top))
    return ChatLogprobs(content=content)
