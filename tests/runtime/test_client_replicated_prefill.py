"""The engine client on a second disaggregated placement, ``prefill:tp=1*2;decode:tp=1``
(three worker processes: two prefill replicas, one decode instance): streaming, aborts at
every stage a request passes through (queued, prefilled and waiting for decode room, in a
KV pull, decoding), and the stats: every instance's KV blocks back to 0 when idle, every
internal map empty, and the finish-reason counters equal to the requests sent."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter

from dsbox import SamplingParams
from dsbox.client import open_engine
from dsbox.config import EngineConfig
from dsbox.metrics.records import FINISH_REASONS

PLACEMENT = "prefill:tp=1*2;decode:tp=1"


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def test_replicated_prefill_streams_aborts_and_counts(preln_ckpt):
    rng = random.Random(3)
    # max_num_seqs=2: the decode instance runs two requests at once, later ones wait
    # prefilled in a prefill instance's memory until it has room
    cfg = EngineConfig(model=str(preln_ckpt), dtype="float32", device="cpu",
                       placement=PLACEMENT, kv_cache_memory=4 << 20, max_model_len=512,
                       max_num_seqs=2)
    outputs: dict[int, list] = {}
    lock = threading.Lock()

    def on_output(out) -> None:
        with lock:
            outputs.setdefault(out.request_id, []).append(out)

    def tokens(rid: int) -> int:
        with lock:
            outs = outputs.get(rid)
            return len(outs[-1].token_ids) if outs else 0

    def prompt(n: int) -> list[int]:
        return [2] + [rng.randrange(4, 50000) for _ in range(n)]

    long = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)
    with open_engine(cfg) as ctl:
        assert [i.role for i in ctl.stats().instances] == ["prefill", "prefill", "decode"]
        sent = 0

        # streaming: one token per output, the deltas make up the text, through a pull
        async def stream():
            return [out async for out in ctl.stream(prompt(6), SamplingParams(
                max_tokens=12, temperature=0, ignore_eos=True))]

        streamed = asyncio.run(stream())
        sent += 1
        assert [len(o.token_ids) for o in streamed] == list(range(1, 13))
        final = streamed[-1]
        assert final.finished and final.finish_reason == "length"
        assert "".join(o.new_text for o in streamed) == final.text
        lc = final.lifecycle
        assert lc.prefill_instance in (0, 1) and lc.decode_instance == 2
        assert lc.prefill_end <= lc.transfer_start <= lc.transfer_end <= lc.decode_start

        # both prefill replicas take work
        batch = ctl.generate([prompt(rng.randrange(4, 40)) for _ in range(8)],
                             SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
        sent += 8
        assert {o.lifecycle.prefill_instance for o in batch} == {0, 1}

        # aborts at known stages: two long requests fill the decode instance ...
        a = [ctl.submit(prompt(8), long, on_output) for _ in range(2)]
        assert _wait(lambda: all(tokens(r) >= 3 for r in a), 30)
        # ... so the next two wait, prefilled (their first token out), for decode room
        b = [ctl.submit(prompt(8), long, on_output) for _ in range(2)]
        assert _wait(lambda: all(tokens(r) >= 1 for r in b), 30)
        assert all(tokens(r) == 1 for r in b) and all(tokens(r) < 400 for r in a)
        ctl.abort(b[0])                          # prefilled
        ctl.abort(a[0])                          # decoding
        c = ctl.submit(prompt(8), long, on_output)
        ctl.abort(c)                             # queued (the same loop pass routes it)
        sent += 5
        # a burst of short requests, aborted at random moments, aiming at KV pulls
        short = [ctl.submit(prompt(rng.randrange(4, 60)), SamplingParams(
            max_tokens=rng.randrange(1, 24), temperature=0, ignore_eos=True), on_output)
            for _ in range(40)]
        sent += len(short)
        for _ in range(200):
            pulls = [p.seq.seq_id for p in list(ctl.flow.pulls.values())]
            if pulls:
                ctl.abort(pulls[0])
            elif rng.random() < 0.05:
                ctl.abort(rng.choice(short))
            time.sleep(0.001)
        ctl.abort(a[1])
        ctl.abort(b[1])
        mine = [*a, *b, c, *short]
        assert _wait(lambda: all(outputs.get(r) and outputs[r][-1].finished for r in mine),
                     60)
        assert _wait(lambda: ctl.stats().kv_blocks_used == 0, 5), ctl.stats()
        stats = ctl.stats()
        sizes = ctl.state_sizes()
    assert all(i.kv_blocks_used == 0 for i in stats.instances)
    assert not any(sizes.values()), {k: v for k, v in sizes.items() if v}
    finals = [outputs[r][-1] for r in mine] + [final, *batch]
    assert len(finals) == sent
    assert all(o.error is None for o in finals)
    assert stats.num_requests == sent == stats.num_finished()
    assert stats.num_unfinished == 0
    by_reason = Counter(o.finish_reason for o in finals)
    assert stats.finished_by_reason() == {r: by_reason.get(r, 0) for r in FINISH_REASONS}
    stages = dict(stats.aborted_at)
    assert sum(stages.values()) == by_reason["abort"]
    for stage in ("queued", "prefilled", "transfer", "decode"):
        assert stages.get(stage, 0) > 0, stages
    assert {outputs[r][-1].finish_reason for r in (a[0], b[0], c)} == {"abort"}
    print("aborted at", stages)
