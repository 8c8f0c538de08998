"""The colocated engine end to end with the real tiny model under churn: requests arrive
during the run, some are aborted mid-run (waiting, prefilled or decoding), some stop on stop
strings, EOS or stop token ids, and a small KV pool forces preemption. At the end no block is
held and every request that was not aborted finished; every request's lifecycle stamps are
in order and TTFT/TPOT/the stage breakdown are derived from them.
"""

from __future__ import annotations

import random

import pytest

from dsbox import LLM, SamplingParams
from dsbox.metrics.lifecycle import Lifecycle

PER_BLOCK = 2 * 3 * 16 * 64 * 4  # bytes of one 16-token block of the tiny pre-LN model, fp32
STOPS = ["e", "th", "ing", "\n", " a"]


@pytest.fixture(scope="module")
def engine(preln_ckpt):
    llm = LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
              kv_cache_memory=6 * PER_BLOCK, max_num_seqs=6, max_num_batched_tokens=96)
    return llm.engine


def random_request(rng: random.Random, long: bool = False
                   ) -> tuple[list[int], SamplingParams]:
    """A random prompt and params; ``long`` ones run to 40+ tokens (they make the pool
    overflow, so the scheduler must preempt)."""
    prompt = [2] + [rng.randrange(4, 50000) for _ in range(rng.randint(8, 40))]
    kind = rng.random()
    if long:
        return prompt, SamplingParams(max_tokens=rng.randint(40, 60), ignore_eos=True,
                                      temperature=rng.choice([0.0, 1.0]), seed=rng.randrange(99))
    params = SamplingParams(
        max_tokens=rng.randint(1, 60),
        temperature=0.0 if kind < 0.4 else rng.choice([0.7, 1.0, 1.3]),
        top_k=rng.choice([0, 0, 5, 50]),
        top_p=rng.choice([1.0, 1.0, 0.9]),
        seed=rng.choice([None, rng.randrange(1000)]),
        stop=rng.sample(STOPS, rng.randint(1, 2)) if rng.random() < 0.3 else [],
        stop_token_ids=[rng.randrange(4, 50000)] if rng.random() < 0.2 else [],
        ignore_eos=rng.random() < 0.5,
    )
    return prompt, params


def check_lifecycle(lc: Lifecycle, aborted: bool) -> None:
    assert lc.finish is not None
    chain = [lc.arrival, lc.prefill_queued, lc.prefill_start, lc.prefill_end]
    if not aborted:
        assert None not in chain and lc.token_times
    present = [t for t in chain if t is not None]
    assert present == sorted(present), chain
    if lc.prefill_end is not None:
        assert lc.transfer_start == lc.transfer_end == lc.decode_queued == lc.prefill_end
    times = lc.token_times
    assert times == sorted(times)
    if times:
        assert lc.prefill_end is not None and lc.prefill_end <= times[0]
        assert times[-1] <= lc.finish
        assert lc.ttft == pytest.approx(times[0] - lc.arrival)
        tpot = 0.0 if len(times) == 1 else (times[-1] - times[0]) / (len(times) - 1)
        assert lc.tpot == pytest.approx(tpot)
        if lc.decode_start is not None:
            assert lc.prefill_end <= lc.decode_start <= lc.finish
    else:
        assert lc.ttft is None and lc.tpot is None
    if not aborted and lc.decode_start is not None:
        b = lc.breakdown()
        assert b is not None and min(b.prefill_queueing, b.prefill_execution,
                                     b.decode_queueing, b.decode_execution) >= 0
        assert b.transfer == 0.0
        assert b.total() == pytest.approx(lc.finish - lc.prefill_queued)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_churn_leaves_no_blocks(engine, seed):
    rng = random.Random(seed)
    live: set[int] = set()
    last: dict[int, object] = {}
    aborted: set[int] = set()
    pending = [random_request(rng) for _ in range(9)] + [random_request(rng, long=True)
                                                          for _ in range(5)]
    params: dict[int, SamplingParams] = {}

    def add() -> None:
        prompt, sp = pending.pop()
        rid = engine.add_request(prompt, sp)
        params[rid] = sp
        live.add(rid)

    for _ in range(6):
        add()
    steps = 0
    while engine.has_unfinished() or pending:
        steps += 1
        assert steps < 2000, "the engine did not drain"
        if pending and rng.random() < 0.15:  # arrivals during the run
            add()
        if live and rng.random() < 0.04:  # abort whatever state the request is in
            rid = rng.choice(sorted(live))
            out = engine.abort(rid)
            assert out is not None and out.finished and out.finish_reason == "abort"
            assert engine.abort(rid) is None
            aborted.add(rid)
            live.discard(rid)
            last[rid] = out
        for out in engine.step():
            last[out.request_id] = out
            if out.finished:
                live.discard(out.request_id)
        held = engine.block_manager.held_by()
        assert sum(held.values()) == engine.block_manager.num_used_blocks
        assert set(held) <= {s.seq_id for s in engine.scheduler.running}

    assert engine.block_manager.num_used_blocks == 0
    assert not engine.scheduler.has_work() and not engine.scheduler.seqs
    assert len(last) == 14
    preemptions = 0
    for rid, out in last.items():
        assert out.finished
        lc = out.lifecycle
        preemptions += lc.num_preemptions
        if rid in aborted:
            assert out.finish_reason == "abort"
        else:
            assert out.finish_reason in ("length", "stop")
            assert 1 <= len(out.token_ids)
            check_finish_reason(engine, out, params[rid])
        check_lifecycle(lc, rid in aborted)
    print("preemptions", preemptions)
    assert preemptions > 0, "the pool must be small enough to preempt"


def check_finish_reason(engine, out, params: SamplingParams) -> None:
    """A request ends for a reason its params allow."""
    n, last = len(out.token_ids), out.token_ids[-1]
    assert n <= params.max_tokens
    if out.finish_reason == "length":
        total = len(out.prompt_token_ids) + n
        assert n == params.max_tokens or total >= engine.max_model_len
    else:
        eos = not params.ignore_eos and last == engine.tokenizer.eos_token_id
        assert eos or last in params.stop_token_ids or params.stop, (out, params)
        if params.stop and not eos and last not in params.stop_token_ids:
            assert not any(stop in out.text for stop in params.stop)


def test_stop_string_trims_text_and_frees(engine):
    """A stop string ends the request with its text cut before the stop."""
    prompt = [2, 100, 200, 300]
    free = engine_generate(engine, prompt, SamplingParams(max_tokens=30, temperature=0,
                                                          ignore_eos=True))
    stop = free.text[len(free.text) // 2: len(free.text) // 2 + 2]
    assert stop
    cut = engine_generate(engine, prompt, SamplingParams(max_tokens=30, temperature=0,
                                                         ignore_eos=True, stop=[stop]))
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    assert engine.block_manager.num_used_blocks == 0


def engine_generate(engine, prompt, params):
    rid = engine.add_request(prompt, params)
    while True:
        for out in engine.step():
            if out.request_id == rid and out.finished:
                return out


def test_abort_before_first_step_and_unknown_id(engine):
    rid = engine.add_request([2, 5, 6], SamplingParams(max_tokens=5))
    out = engine.abort(rid)
    assert out.finish_reason == "abort" and out.token_ids == []
    lc = out.lifecycle
    assert lc.prefill_start is None and lc.finish is not None and lc.ttft is None
    assert engine.abort(123456) is None
    assert engine.block_manager.num_used_blocks == 0 and not engine.has_unfinished()
