"""Aborts at every stage, a killed worker, a too-small decode pool, clean shutdown."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dsbox import SamplingParams
from dsbox.client import open_engine
from dsbox.config import EngineConfig
from dsbox.engine.runtime.engine import Engine


def _config(ckpt, placement: str, **kw) -> EngineConfig:
    kw.setdefault("kv_cache_memory", 4 << 20)
    return EngineConfig(model=str(ckpt), dtype="float32", device="cpu", placement=placement,
                        **kw)


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _in_flight(ctl: Engine, rng: random.Random) -> list[int]:
    """Ids in a KV pull or a prefill step right now (read racily from the test thread)."""
    picked = []
    pulls = [p.seq.seq_id for p in list(ctl.flow.pulls.values())]
    if pulls and rng.random() < 0.5:
        picked.append(rng.choice(pulls))
    steps = [s.seq_id for out in list(ctl.instances[0].in_flight.values()) for s in out.seqs]
    if steps and rng.random() < 0.2:
        picked.append(rng.choice(steps))
    return picked


def test_random_aborts_leave_nothing_behind(preln_ckpt):
    """1,000 requests, aborted at random moments: no block is held anywhere at the end, and
    every per-request map of the engine and its workers is empty."""
    rng = random.Random(0)
    per_block = 2 * 3 * 16 * 64 * 4
    cfg = _config(preln_ckpt, "prefill:tp=1;decode:tp=1", kv_cache_memory=64 * per_block,
                  kv_cache_memory_decode=12 * per_block, max_num_batched_tokens=256,
                  max_model_len=192)
    finals: dict[int, object] = {}

    def on_output(out):
        if out.finished:
            finals[out.request_id] = out

    with open_engine(cfg) as ctl:
        rids = []
        for _ in range(1000):
            prompt = [2] + [rng.randrange(4, 50000) for _ in range(rng.randrange(1, 60))]
            params = SamplingParams(max_tokens=rng.randrange(1, 24), temperature=0,
                                    ignore_eos=True)
            rids.append(ctl.submit(prompt, params, on_output))
            if rng.random() < 0.5:
                time.sleep(rng.random() * 0.004)
            if rids and rng.random() < 0.45:
                ctl.abort(rng.choice(rids))
            # also aim at the short stages: a pull or a prefill step in flight
            for sid in _in_flight(ctl, rng):
                ctl.abort(sid)
        for rid in rng.sample(rids, 120):
            ctl.abort(rid)
            time.sleep(rng.random() * 0.01)
        assert _wait(lambda: len(finals) == len(rids), 120), f"{len(finals)} of {len(rids)}"
        assert _wait(lambda: ctl.stats().kv_blocks_used == 0, 5), ctl.stats()
        sizes = ctl.state_sizes()
        assert not any(sizes.values()), {k: v for k, v in sizes.items() if v}
        stats = ctl.stats()
        stages = dict(stats.aborted_at)
    assert stats.num_requests == len(rids) == stats.num_finished()
    assert stats.finished_by_reason()["abort"] == sum(o.finish_reason == "abort"
                                                       for o in finals.values())
    reasons = {o.finish_reason for o in finals.values()}
    assert reasons <= {"length", "abort"} and "abort" in reasons
    assert all(o.error is None for o in finals.values())
    # the aborts hit every stage a request passes through
    for stage in ("queued", "prefilled", "transfer", "decode"):
        assert stages.get(stage, 0) > 0, stages
    assert stages.get("prefill", 0) + stages.get("queued", 0) > 0


def test_small_decode_pool_requests_wait_in_prefill_memory(preln_ckpt):
    per_block = 2 * 3 * 16 * 64 * 4
    # decode holds ~3 requests of ~80 tokens at once; 24 requests arrive together
    cfg = _config(preln_ckpt, "prefill:tp=1;decode:tp=1", kv_cache_memory=256 * per_block,
                  kv_cache_memory_decode=16 * per_block, max_model_len=256)
    rng = random.Random(1)
    prompts = [[2] + [rng.randrange(4, 50000) for _ in range(60)] for _ in range(24)]
    with open_engine(cfg) as ctl:
        outs = ctl.generate(prompts, SamplingParams(max_tokens=20, temperature=0,
                                                    ignore_eos=True))
        assert ctl.stats().kv_blocks_used == 0
    assert all(o.error is None and o.finish_reason == "length" for o in outs)
    assert all(len(o.token_ids) == 20 for o in outs)
    waited = [o.lifecycle.transfer_start - o.lifecycle.decode_queued for o in outs]
    assert max(waited) > 0.05, "some requests must have waited for decode room"


def test_killed_worker_fails_its_requests_fast(preln_ckpt):
    cfg = _config(preln_ckpt, "prefill:tp=1*2;decode:tp=1", kv_cache_memory=8 << 20)
    rng = random.Random(2)
    finals: dict[int, object] = {}

    def on_output(out):
        if out.finished:
            finals[out.request_id] = out

    with open_engine(cfg) as ctl:
        victim = ctl.instances[0]
        params = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)
        rids = [ctl.submit([2] + [rng.randrange(4, 50000) for _ in range(300)], params,
                           on_output) for _ in range(12)]
        assert _wait(lambda: victim.scheduler.num_waiting + len(victim.in_flight) > 0
                     or len(victim.scheduler.prefilled) > 0, 30)
        pid = ctl.stats().instances[0].pids[0]  # what operators see (the server's /health)
        assert pid == victim.executor.processes[0].pid
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        assert _wait(lambda: not ctl.health().instances[0][2], 5)
        failed = lambda: [o for o in finals.values() if o.error]  # noqa: E731
        assert _wait(lambda: len(failed()) > 0, 5)
        assert time.monotonic() - killed_at < 5
        # new work goes to the healthy prefill instance and completes
        short = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
        later = ctl.generate([[2, 100, 200, 300]] * 3, short)
        assert all(o.error is None and len(o.token_ids) == 4 for o in later)
        assert _wait(lambda: len(finals) == len(rids), 300)
        health = ctl.health()
        # the failed requests left nothing behind, in the failed instance's maps neither
        assert _wait(lambda: ctl.stats().kv_blocks_used == 0, 5), ctl.stats()
        sizes = ctl.state_sizes()
        stats = ctl.stats()
    assert not any(sizes.values()), {k: v for k, v in sizes.items() if v}
    assert "prefill0.scheduler.seqs" in sizes and "prefill0.encoder.known" in sizes
    workers = {k for k in sizes if k.startswith("worker")}
    assert workers == {"worker1.0.requests", "worker2.0.requests"}  # the live ones
    assert stats.num_requests == len(rids) + 3 == stats.num_finished()
    assert stats.finished_by_reason()["error"] == len(failed()) > 0
    assert not health.ok and not health.instances[0][2] and health.instances[0][3]
    assert health.instances[1][2] and health.instances[2][2]
    errors = [o for o in finals.values() if o.error]
    assert all("instance 0" in o.error for o in errors)
    ok = [o for o in finals.values() if not o.error]
    assert ok and all(len(o.token_ids) == 400 for o in ok)


def test_a_worker_that_does_not_answer_the_probe_is_an_error(preln_ckpt):
    """``state_sizes`` names a worker that does not answer its probe (here: stopped with
    SIGSTOP) instead of leaving its key out; once it runs again, its late answer to the old
    probe is not taken for the new one's, and the sizes are all there."""
    with open_engine(_config(preln_ckpt, "prefill:tp=1;decode:tp=1")) as ctl:
        ctl.generate([[2, 5, 6, 7]], SamplingParams(max_tokens=3, temperature=0))
        ctl.probe_timeout_s = 1.0
        pid = ctl.stats().instances[1].pids[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(RuntimeError, match="decode instance 1 rank 0"):
                ctl.state_sizes()
        finally:
            os.kill(pid, signal.SIGCONT)
        ctl.probe_timeout_s = 20.0
        sizes = ctl.state_sizes()
    assert {"worker0.0.requests", "worker1.0.requests"} <= sizes.keys()
    assert not any(sizes.values()), sizes


SCRIPT = """
import os, sys
from dsbox import LLM, SamplingParams
if __name__ == "__main__":
    llm = LLM(model=sys.argv[1], dtype="float32", device="cpu", kv_cache_memory=4 << 20,
              placement="prefill:tp=2;decode:tp=1")
    llm.generate([[2, 5, 6]], SamplingParams(max_tokens=2, temperature=0))
    procs = [p for i in llm.client.instances for p in i.executor.processes]
    print("PIDS", *[p.pid for p in procs], flush=True)
    if sys.argv[2] == "raise":
        raise RuntimeError("boom in the parent")
    llm.close()
    alive = [p.pid for p in procs if p.is_alive()]
    print("ALIVE_AFTER_CLOSE", len(alive), flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["close", "raise"])
def test_no_child_left_behind(preln_ckpt, tmp_path, how):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([sys.executable, str(script), str(preln_ckpt), how],
                          capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PIDS"))
    pids = [int(x) for x in line.split()[1:]]
    assert len(pids) == 3
    if how == "raise":
        assert proc.returncode != 0 and "boom in the parent" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert "ALIVE_AFTER_CLOSE 0" in proc.stdout
    assert _wait(lambda: not any(_alive(p) for p in pids), 5), pids


def test_stream_yields_tokens_and_cancel_aborts(preln_ckpt):
    import asyncio

    cfg = _config(preln_ckpt, "colocated:tp=1", executor="workers")
    with open_engine(cfg) as ctl:

        async def run():
            seen = []
            async for out in ctl.stream([2, 10, 20, 30], SamplingParams(
                    max_tokens=6, temperature=0, ignore_eos=True)):
                seen.append(len(out.token_ids))
            agen = ctl.stream([2, 11, 12], SamplingParams(max_tokens=500, temperature=0,
                                                          ignore_eos=True))
            first = await agen.__anext__()
            await agen.aclose()  # the caller goes away: the request is aborted
            return seen, first

        seen, first = asyncio.run(run())
        assert seen == [1, 2, 3, 4, 5, 6]
        assert len(first.token_ids) >= 1 and not first.finished
        assert _wait(lambda: ctl.stats().kv_blocks_used == 0
                     and ctl.stats().num_unfinished == 0, 10)
        assert sum(ctl.stats().aborted_at.values()) == 1
