"""The load generator on its own (no UI) against a real disaggregated engine: Poisson
arrivals at the asked rate, a rate changed live, a cap on requests in flight, prompts cut to
fit the model, and a stop that aborts what is in flight and leaves the engine empty."""

from __future__ import annotations

import math
import time

import pytest

from dsbox.workloads import RequestSpec, load_workload
from dsbox.workloads.load_generator import LoadGenerator
from tests.tui.conftest import MAX_MODEL_LEN


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def humaneval():
    return load_workload("humaneval")


def _drain(engine) -> None:
    _wait(lambda: engine.stats().num_unfinished == 0)


def test_rate_live_changes_cap_and_stop(engine, humaneval):
    gen = LoadGenerator(engine, humaneval, rate=25.0, max_in_flight=3, seed=1, tag="lg-test")
    _, cursor = engine.finished_since(0)
    gen.start()
    _wait(lambda: gen.status().dropped >= 3)  # far more offered than 3 in flight allow
    status = gen.status()
    assert status.running and status.in_flight <= 3 and status.submitted >= 3
    gen.set_rate(0.0)  # paused, live
    time.sleep(0.3)
    paused = gen.status()
    time.sleep(1.0)
    assert gen.status().submitted == paused.submitted and gen.status().rate == 0.0
    gen.stop(abort=True)
    assert not gen.running
    _drain(engine)
    _wait(lambda: gen.status().in_flight == 0)
    records, _ = engine.finished_since(cursor)
    mine = [r for r in records if r.tag == "lg-test"]
    assert len(mine) == gen.status().submitted == gen.status().finished
    assert all(r.finish_reason in ("length", "abort") for r in mine)
    assert all(r.num_prompt_tokens + r.num_output_tokens <= MAX_MODEL_LEN for r in mine)
    assert gen.status().failed == 0
    assert engine.stats().kv_blocks_used == 0


def test_poisson_arrivals_at_the_asked_rate(engine, humaneval):
    short = [RequestSpec(r.num_prompt_tokens, 2, r.prompt) for r in humaneval]
    gen = LoadGenerator(engine, short, rate=40.0, max_in_flight=10_000, seed=2)
    gen.start()
    time.sleep(2.0)
    gen.stop(abort=True)
    n = gen.status().submitted
    # Poisson(80) arrivals in 2 s: well inside +-5 standard deviations
    assert abs(n - 80) <= 5 * math.sqrt(80), n
    _drain(engine)


def test_bad_settings_are_errors(engine, humaneval):
    with pytest.raises(ValueError, match="rate"):
        LoadGenerator(engine, humaneval, rate=-1.0)
    with pytest.raises(ValueError, match="rate"):
        LoadGenerator(engine, humaneval, rate=float("nan"))
    with pytest.raises(ValueError, match="prompt text"):
        LoadGenerator(engine, [RequestSpec(5, 5)])
    with pytest.raises(ValueError, match="max_in_flight"):
        LoadGenerator(engine, humaneval, max_in_flight=0)
    gen = LoadGenerator(engine, humaneval)
    with pytest.raises(ValueError, match="rate"):
        gen.set_rate(math.inf)
