"""The colocated engine end to end, through its client, with the real tiny model under
churn: requests arrive during the run, some are aborted mid-run (waiting, prefilled or
decoding), some stop on stop strings, EOS or stop token ids, and a small KV pool forces
preemption. At the end no block is
held and every request that was not aborted finished; every request's lifecycle stamps are
in order and TTFT/TPOT/the stage breakdown are derived from them.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from dsbox import LLM, RequestOutput, SamplingParams
from dsbox.metrics.lifecycle import Lifecycle

PER_BLOCK = 2 * 3 * 16 * 64 * 4  # bytes of one 16-token block of the tiny pre-LN model, fp32
STOPS = ["e", "th", "ing", "\n", " a"]


@pytest.fixture(scope="module")
def llm(preln_ckpt):
    with LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
             kv_cache_memory=6 * PER_BLOCK, max_model_len=96, max_num_seqs=6,
             max_num_batched_tokens=96) as llm:
        yield llm


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
def test_random_churn_leaves_no_blocks(llm, seed):
    """Requests arrive while others run; some are aborted in whatever state they are in."""
    client = llm.client
    rng = random.Random(seed)
    last: dict[int, RequestOutput] = {}
    done = threading.Event()
    params: dict[int, SamplingParams] = {}
    pending = [random_request(rng) for _ in range(9)] + [random_request(rng, long=True)
                                                          for _ in range(5)]
    total = len(pending)

    def on_output(out: RequestOutput) -> None:
        last[out.request_id] = out
        if sum(o.finished for o in last.values()) == total:
            done.set()

    def add() -> None:
        prompt, sp = pending.pop()
        params[client.submit(prompt, sp, on_output)] = sp

    before = client.stats()
    for _ in range(6):
        add()
    aborted: set[int] = set()
    while pending:
        time.sleep(rng.random() * 0.01)
        add()
        if rng.random() < 0.3:  # abort whatever state a request is in
            rid = rng.choice(sorted(params))
            client.abort(rid)
            aborted.add(rid)
    assert done.wait(60), "the engine did not drain"
    assert llm.stats().kv_blocks_used == 0
    assert not any(client.state_sizes().values())
    check_counters(before, client.stats(), last)
    preemptions = 0
    for rid, out in last.items():
        assert out.finished
        lc = out.lifecycle
        preemptions += lc.num_preemptions
        if out.finish_reason == "abort":
            assert rid in aborted
        else:
            assert out.finish_reason in ("length", "stop")
            assert 1 <= len(out.token_ids)
            check_finish_reason(client, out, params[rid])
        check_lifecycle(lc, out.finish_reason == "abort")
    print("preemptions", preemptions)
    assert preemptions > 0, "the pool must be small enough to preempt"


def check_counters(before, after, finals: dict[int, RequestOutput]) -> None:
    """The engine's counters moved by exactly the requests sent and how each ended."""
    from collections import Counter

    assert after.num_requests - before.num_requests == len(finals)
    assert after.num_unfinished == 0
    sent = Counter(o.finish_reason for o in finals.values())
    moved = Counter(after.finished_by_reason())
    moved.subtract(before.finished_by_reason())
    assert +moved == sent, (moved, sent)
    assert after.generation_tokens - before.generation_tokens >= sum(
        len(o.token_ids) for o in finals.values())


def test_engine_info_says_what_runs_where(llm, preln_ckpt):
    from dsbox.client import EngineInfo

    info = llm.client.info()
    assert info == EngineInfo(model=preln_ckpt.name, source=f"local directory {preln_ckpt}",
                              dtype="float32", device="cpu", placement="colocated:tp=1@0")


def check_finish_reason(client, out, params: SamplingParams) -> None:
    """A request ends for a reason its params allow."""
    n, last = len(out.token_ids), out.token_ids[-1]
    assert n <= params.max_tokens
    if out.finish_reason == "length":
        total = len(out.prompt_token_ids) + n
        assert n == params.max_tokens or total >= client.max_model_len
    else:
        eos = not params.ignore_eos and last == client.tokenizer.eos_token_id
        assert eos or last in params.stop_token_ids or params.stop, (out, params)
        if params.stop and not eos and last not in params.stop_token_ids:
            assert not any(stop in out.text for stop in params.stop)


def test_stop_string_trims_text_and_frees(llm):
    """A stop string ends the request with its text cut before the stop."""
    prompt = [2, 100, 200, 300]
    free = llm.generate(prompt, SamplingParams(max_tokens=30, temperature=0,
                                               ignore_eos=True))[0]
    stop = free.text[len(free.text) // 2: len(free.text) // 2 + 2]
    assert stop
    cut = llm.generate(prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True,
                                              stop=[stop]))[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    assert llm.stats().kv_blocks_used == 0


def test_streamed_text_concatenates_to_the_final_text(llm):
    """A stop string that spans tokens: the deltas streamed before it completes must not
    have carried its start; every output's ``new_text`` joined equals the final text."""
    prompt = [2, 100, 200, 300]
    free = llm.generate(prompt, SamplingParams(max_tokens=30, temperature=0,
                                               ignore_eos=True))[0]
    tok = llm.client.tokenizer
    ends = [len(tok.decode(free.token_ids[:k])) for k in range(1, len(free.token_ids))]
    # the first token boundary (past a few tokens) with two characters on either side
    at = next(e for e in ends[3:] if 2 <= e <= len(free.text) - 2
              and free.text.find(free.text[e - 2:e + 2]) == e - 2)
    stop = free.text[at - 2:at + 2]
    for sp in (SamplingParams(max_tokens=30, temperature=0, ignore_eos=True, stop=[stop]),
               SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)):
        outs = list(llm.stream(prompt, sp))
        final = outs[-1]
        assert "".join(o.new_text for o in outs) == final.text
        assert all(o.text.startswith("".join(p.new_text for p in outs[:i + 1]))
                   for i, o in enumerate(outs))
    assert final.text == free.text
    cut = list(llm.stream(prompt, SamplingParams(max_tokens=30, temperature=0,
                                                 ignore_eos=True, stop=[stop])))
    assert cut[-1].finish_reason == "stop" and cut[-1].text == free.text[:at - 2]
    assert sum(bool(o.new_text) for o in cut) > 2  # text did stream before the stop


def test_abort_right_after_submit_and_unknown_id(llm):
    outs = []
    rid = llm.client.submit([2, 5, 6], SamplingParams(max_tokens=50, ignore_eos=True),
                            outs.append)
    llm.abort(rid)
    llm.abort(123456)  # unknown: ignored
    deadline = time.monotonic() + 10
    while not (outs and outs[-1].finished) and time.monotonic() < deadline:
        time.sleep(0.01)
    out = outs[-1]
    assert out.finish_reason == "abort" and len(out.token_ids) < 50
    assert out.lifecycle.finish is not None
    assert llm.stats().kv_blocks_used == 0 and llm.stats().num_unfinished == 0
