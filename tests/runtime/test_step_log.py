"""The engine logs every step it runs (``Engine.steps_since``): shapes as scheduled, wall
time from scheduling to the answer handled, the worker's model time; in-process and in
worker processes."""

from __future__ import annotations

import pytest

from dsbox.client import open_engine
from dsbox.engine.core.sampling_params import SamplingParams

PROMPTS = [[5 + k for k in range(n)] for n in (7, 12, 20)]
OUTPUT = 4


@pytest.mark.parametrize("placement", ["colocated:tp=1", "prefill:tp=1;decode:tp=1"])
def test_every_step_is_logged_with_its_shape_and_times(placement):
    with open_engine(model="opt-tiny", dummy_weights=True, device="cpu", num_threads=1,
                     placement=placement) as client:
        _, cursor = client.steps_since(0)
        outs = client.generate(PROMPTS, SamplingParams(max_tokens=OUTPUT, temperature=0.0,
                                                       ignore_eos=True), timeout=120)
        assert all(len(o.token_ids) == OUTPUT for o in outs)
        steps, cursor = client.steps_since(cursor)
        assert client.steps_since(cursor) == ([], cursor)
        stats = client.stats()
        sizes = client.state_sizes()
    assert len(steps) == sum(i.num_steps for i in stats.instances)  # one record per step
    prefill = [s for s in steps if s.is_prefill]
    decode = [s for s in steps if not s.is_prefill]
    roles = {i.instance_id: i.role for i in stats.instances}
    assert all(s.role == roles[s.instance_id] for s in steps)
    # every prompt token prefilled once; every later token decoded once
    assert sum(s.num_tokens for s in prefill) == sum(len(p) for p in PROMPTS)
    assert sum(s.num_seqs for s in prefill) == len(PROMPTS)
    assert all(s.sum_context == s.num_tokens for s in prefill)
    assert all(s.sum_sq_tokens <= s.num_tokens ** 2 for s in prefill)
    assert sum(s.num_seqs for s in decode) == len(PROMPTS) * (OUTPUT - 1)
    assert all(s.num_tokens == s.num_seqs for s in decode)
    first = min(decode, key=lambda s: s.start)
    if first.num_seqs == len(PROMPTS):  # all three decoding together from the first step
        assert first.sum_context == sum(len(p) + 1 for p in PROMPTS)
    if placement.startswith("prefill"):
        assert {s.role for s in prefill} == {"prefill"} and {s.role for s in decode} == {
            "decode"}
    for s in steps:
        assert s.end >= s.start and s.model_ms > 0
        assert s.wall_ms >= s.model_ms * 0.999  # the wall time holds the model's
        assert s.to_dict()["wall_ms"] == s.wall_ms
    assert sizes[f"{steps[0].role}{steps[0].instance_id}.step_starts"] == 0



@pytest.mark.parametrize("executor,placement", [
    ("inprocess", "prefill:tp=1;decode:tp=1"),
    ("workers", "prefill:tp=1;decode:tp=2"),
])
def test_every_kv_pull_is_logged_once_with_its_copy_times(executor, placement):
    with open_engine(model="opt-tiny", dummy_weights=True, device="cpu", num_threads=1,
                     placement=placement, executor=executor) as client:
        _, cursor = client.pulls_since(0)
        outs = client.generate(PROMPTS, SamplingParams(max_tokens=OUTPUT, temperature=0.0,
                                                       ignore_eos=True), timeout=180)
        assert all(len(o.token_ids) == OUTPUT for o in outs)
        pulls, cursor = client.pulls_since(cursor)
        assert client.pulls_since(cursor) == ([], cursor)
        stats = client.stats()
        records, _ = client.finished_since(0)
    roles = {i.instance_id: i.role for i in stats.instances}
    assert len(pulls) == len(PROMPTS)  # one record per request, over every decode rank
    assert sorted(p.num_tokens for p in pulls) == sorted(len(p) for p in PROMPTS)
    for p in pulls:
        assert roles[p.instance_id] == "decode" and roles[p.src_instance_id] == "prefill"
        assert p.sent <= p.start <= p.end and p.copy_ms >= 0
        assert p.to_dict()["copy_ms"] == p.copy_ms
    # the bytes each pull moved, summed over the decode ranks, are the request's KV bytes
    assert sorted(p.nbytes for p in pulls) == sorted(r.kv_bytes for r in records)
    assert all(p.nbytes > 0 for p in pulls)
