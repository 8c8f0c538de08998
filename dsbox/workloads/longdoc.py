"""Long-document summarization workload, built from long documents users pasted into ShareGPT.

DistServe's summarization workload is LongBench (mean 1738 prompt / 91 output tokens),
which cannot be downloaded here. This stand-in uses real long text that an installed
package ships: the user ("human") turns of the packaged ShareGPT file (the complete
conversations; see :mod:`dsbox.workloads.sharegpt`) of at least 1280 tokens (and 2048
characters) that the assistant answered. They are pasted articles, reports, legal texts,
transcripts, essays and some code, often with the user's own request around them.
Identical documents are kept once. Choices, stated plainly:

- prompt = ``"Summarize the following document:\\n"`` + the document;
- output length = the token count of the assistant's real reply to that turn (counted
  with BOS, as for the other workloads), capped at a summary budget of 128 tokens;
  replies under 4 tokens are dropped;
- documents that do not fit OPT's 2048 positions are cut in the middle as LongBench's
  own scripts do (first half + last half of the allowed tokens, cut at token boundaries),
  so that prompt + output < 2048; each prompt's count is then checked exactly.

With the bundled (OPT segmentation) tokenizer this gives 664 requests with mean 1758.4
prompt / 110.7 output tokens (LongBench in the paper: 1738 / 91); 75% of the outputs sit at
the 128 cap. It is a summarization-shaped load (long prefill, short decode), not
LongBench's documents. Lengths are cached like ShareGPT's and shipped for the bundled
tokenizer (see :mod:`dsbox.workloads.cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsbox.engine.model.tokenizer import Tokenizer
from dsbox.workloads.sharegpt import (
    MAX_TOTAL_TOKENS,
    MIN_TOKENS,
    Conversation,
    cached_rows,
    sharegpt_data_file,
)
from dsbox.workloads.spec import RequestSpec

__all__ = ["PROMPT_PREFIX", "SUMMARY_BUDGET", "longdoc_requests"]

PROMPT_PREFIX = "Summarize the following document:\n"
#: Output tokens are the real reply's count capped at this budget.
SUMMARY_BUDGET = 128
MIN_DOC_TOKENS = 1280
# Documents shorter than this many characters cannot reach MIN_DOC_TOKENS tokens in
# practice; skipping them up front keeps the first build fast.
_MIN_DOC_CHARS = 2048
_MAX_FIT_ROUNDS = 6
_RULE_VERSION = 1


def _candidates(conversations: Sequence[Conversation]) -> list[tuple[int, int]]:
    """``(conversation, turn)`` of long human turns that the assistant answered, deduplicated."""
    seen: set[str] = set()
    picks = []
    for index, turns in enumerate(conversations):
        for turn in range(len(turns) - 1):
            role, text = turns[turn]
            if role != "human" or len(text) < _MIN_DOC_CHARS or turns[turn + 1][0] != "gpt":
                continue
            if text in seen:
                continue
            seen.add(text)
            picks.append((index, turn))
    return picks


def _cut(doc: str, head_chars: int, tail_chars: int) -> str:
    return doc[:head_chars] + doc[len(doc) - tail_chars :]


@dataclass(slots=True)
class _Doc:
    """A document being fitted into the token budget."""

    index: int
    turn: int
    text: str
    num_tokens: int
    num_output: int
    budget: int  # tokens of the document that may stay
    spans: list[tuple[int, int]] | None = None  # token character offsets, when needed


def _cuts(docs: Sequence[_Doc], tokenizer: Tokenizer) -> list[tuple[int, int]]:
    """``(head_chars, tail_chars)`` keeping ``budget`` tokens of each document."""
    need_spans = [d for d in docs if d.num_tokens > d.budget and d.spans is None]
    if need_spans:
        encodings = tokenizer.hf.encode_batch([d.text for d in need_spans], False)
        for doc, enc in zip(need_spans, encodings, strict=True):
            doc.spans = enc.offsets
    cuts = []
    for doc in docs:
        if doc.num_tokens <= doc.budget:
            cuts.append((len(doc.text), 0))
            continue
        spans = doc.spans
        head = doc.budget // 2
        tail = doc.budget - head
        cuts.append((spans[head - 1][1], len(doc.text) - spans[len(spans) - tail][0]))
    return cuts


def _build_rows(conversations: Sequence[Conversation], tokenizer: Tokenizer) -> list[list[int]]:
    """Rows ``[conversation, turn, head_chars, tail_chars, prompt_tokens, output_tokens]``."""
    picks = _candidates(conversations)
    texts = [conversations[i][t][1] for i, t in picks]
    replies = [conversations[i][t + 1][1] for i, t in picks]
    doc_lens = tokenizer.count_tokens(texts, add_bos=False)
    reply_lens = tokenizer.count_tokens(replies)
    prefix_len = len(tokenizer.encode(PROMPT_PREFIX))  # BOS included

    pending = []
    for (index, turn), text, doc_len, reply_len in zip(
        picks, texts, doc_lens, reply_lens, strict=True
    ):
        if doc_len < MIN_DOC_TOKENS or reply_len < MIN_TOKENS:
            continue
        num_output = min(reply_len, SUMMARY_BUDGET)
        budget = MAX_TOTAL_TOKENS - 1 - num_output - prefix_len
        pending.append(_Doc(index, turn, text, doc_len, num_output, budget))

    rows: list[list[int]] = []
    for _ in range(_MAX_FIT_ROUNDS):
        if not pending:
            break
        cuts = _cuts(pending, tokenizer)
        prompts = [PROMPT_PREFIX + _cut(d.text, *cut) for d, cut in zip(pending, cuts, strict=True)]
        retry = []
        for doc, cut, prompt_len in zip(
            pending, cuts, tokenizer.count_tokens(prompts), strict=True
        ):
            # Joining head and tail (and the prefix) can merge or split a token or two.
            excess = prompt_len + doc.num_output - (MAX_TOTAL_TOKENS - 1)
            if excess <= 0:
                rows.append([doc.index, doc.turn, *cut, prompt_len, doc.num_output])
            else:
                doc.budget = min(doc.budget, doc.num_tokens) - excess
                retry.append(doc)
        pending = retry
    rows.sort()
    return rows


def longdoc_requests(tokenizer: Tokenizer, with_text: bool = True) -> list[RequestSpec]:
    """The long-document summarization requests (see the module docstring); cached."""
    rows, conversations = cached_rows("longdoc", _RULE_VERSION, sharegpt_data_file("longdoc"),
                                      tokenizer, _build_rows, with_text)
    requests = []
    for index, turn, head_chars, tail_chars, prompt_len, output_len in rows:
        prompt = None
        if with_text:
            prompt = PROMPT_PREFIX + _cut(conversations[index][turn][1], head_chars, tail_chars)
        requests.append(RequestSpec(prompt_len, output_len, prompt, f"longdoc[{index}]:{turn}"))
    return requests
