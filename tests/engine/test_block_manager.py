"""The paged KV block manager: unit tests, and a hypothesis state machine that drives the real
colocated Scheduler over a tiny pool with random arrivals, steps, EOS, stops, aborts (also
while a step is in flight) and the preemptions they cause. After every operation the blocks
in use are exactly those in the block tables, no block is in two tables, and at the end,
with every request finished or aborted, no block is allocated.

No model runs: the scheduler only counts tokens, so sampled tokens are random ids.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import Phase, Scheduler, SchedulerConfig
from dsbox.engine.core.sequence import FinishReason, Sequence, SequenceStatus
from dsbox.metrics.lifecycle import Lifecycle

EOS = 2


# --- factories ------------------------------------------------------------------------------
def make_scheduler(num_blocks: int = 8, block_size: int = 4, max_num_batched_tokens: int = 64,
                   max_num_seqs: int = 8) -> Scheduler:
    return Scheduler(SchedulerConfig(max_num_batched_tokens, max_num_seqs),
                     BlockManager(num_blocks, block_size))


def make_seq(seq_id: int, num_prompt: int, max_tokens: int = 8, **kw) -> Sequence:
    return Sequence(seq_id, list(range(10, 10 + num_prompt)),
                    SamplingParams(max_tokens=max_tokens, temperature=0, **kw),
                    Lifecycle(0.0), eos_token_id=EOS)


def check_tables(bm: BlockManager) -> None:
    """Blocks in use == blocks in tables; tables disjoint; free list + tables = the pool."""
    tables = [bm.block_table(sid) for sid in bm.held_by()]
    held = [b for t in tables for b in t]
    assert bm.num_used_blocks == len(held)
    assert len(set(held)) == len(held), "a block is in two tables (or twice in one)"
    assert all(0 <= b < bm.num_blocks for b in held)
    assert sorted(held + list(bm._free)) == list(range(bm.num_blocks))
    assert all(tables), "an empty table is kept"


# --- BlockManager unit tests ------------------------------------------------------------------
def test_reserve_grows_and_free_returns_everything():
    bm = BlockManager(num_blocks=6, block_size=4)
    assert bm.blocks_for(0) == 0 and bm.blocks_for(1) == 1 and bm.blocks_for(4) == 1
    assert bm.blocks_for(5) == 2
    t = bm.reserve(1, 5)
    assert len(t) == 2 and bm.num_slots(1) == 8
    assert bm.reserve(1, 8) is t and len(t) == 2  # already holds 8 tokens
    assert bm.extra_blocks(1, 9) == 1
    bm.reserve(1, 9)
    bm.reserve(2, 1)
    assert bm.held_by() == {1: 3, 2: 1}
    assert bm.num_used_blocks == 4 and bm.num_free_blocks == 2 and bm.usage == pytest.approx(4 / 6)
    check_tables(bm)
    assert bm.free(1) == 3 and bm.free(1) == 0 and bm.free(99) == 0
    assert bm.free(2) == 1
    assert bm.num_used_blocks == 0 and not bm.has(1)
    check_tables(bm)


def test_grow_adds_the_block_reserve_would():
    a, b = BlockManager(num_blocks=6, block_size=4), BlockManager(num_blocks=6, block_size=4)
    for bm in (a, b):
        bm.reserve(1, 4)
        bm.reserve(2, 3)
    a.reserve(1, 5)
    a.reserve(2, 5)
    b.grow([1, 2])
    assert a.held_by() == b.held_by() == {1: 2, 2: 2}
    assert a.block_table(1) == b.block_table(1) and a.block_table(2) == b.block_table(2)
    with pytest.raises(MemoryError):
        b.grow([1, 2, 1])
    assert b.held_by() == {1: 2, 2: 2}  # a refused grow changes nothing
    check_tables(b)


def test_can_reserve_respects_keep_free_and_failure_changes_nothing():
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.reserve(1, 8)
    assert bm.can_reserve(2, 8) and not bm.can_reserve(2, 8, keep_free=1)
    assert not bm.can_reserve(2, 9)
    with pytest.raises(MemoryError, match="out of blocks"):
        bm.reserve(2, 9)
    assert not bm.has(2) and bm.num_free_blocks == 2
    check_tables(bm)


def test_slots_map_positions_into_the_blocks():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.reserve(5, 3)
    bm.reserve(6, 2)
    bm.reserve(5, 10)
    table = bm.block_table(5)
    assert [bm.slot(5, p) for p in range(10)] == [table[p // 4] * 4 + p % 4 for p in range(10)]
    slots = {bm.slot(5, p) for p in range(10)} | {bm.slot(6, p) for p in range(2)}
    assert len(slots) == 12  # no two tokens share a slot


def test_freed_blocks_are_reused():
    bm = BlockManager(num_blocks=3, block_size=2)
    first = set(bm.reserve(1, 6))
    bm.free(1)
    assert set(bm.reserve(2, 6)) == first


@pytest.mark.parametrize("kw", [dict(num_blocks=0, block_size=4),
                                dict(num_blocks=4, block_size=0)])
def test_bad_sizes(kw):
    with pytest.raises(ValueError):
        BlockManager(**kw)


# --- scheduler-level deterministic checks ----------------------------------------------------
def test_preemption_frees_blocks_and_requeues_first():
    s = make_scheduler(num_blocks=4, block_size=4, max_num_seqs=4)
    a, b = make_seq(0, 7, max_tokens=20, ignore_eos=True), make_seq(1, 7, max_tokens=20,
                                                                   ignore_eos=True)
    s.add(a, 0.0)
    s.add(b, 0.0)
    out = s.schedule(0.0)
    assert out.phase is Phase.PREFILL and len(out.seqs) == 2
    s.on_step_done(out, [50, 51], 0.0)
    preempted = []
    for _ in range(3):
        out = s.schedule(0.0)
        preempted += out.preempted
        s.on_step_done(out, [60] * len(out.seqs), 0.0)
        check_tables(s.block_manager)
    assert preempted == [1]
    assert b.status is SequenceStatus.WAITING and s.waiting[0] is b
    assert b.num_computed_tokens == 0 and not s.block_manager.has(1)
    assert b.lifecycle.num_preemptions == 1


def test_a_prompt_larger_than_the_pool_is_refused():
    s = make_scheduler(num_blocks=2, block_size=4)
    with pytest.raises(ValueError, match="pool has only 2"):
        s.add(make_seq(0, 8), 0.0)
    assert s.block_manager.num_used_blocks == 0 and not s.has_work()


def test_finish_is_idempotent_and_frees():
    s = make_scheduler()
    seq = make_seq(0, 5)
    s.add(seq, 0.0)
    out = s.schedule(0.0)
    s.on_step_done(out, [77], 1.0)
    assert s.block_manager.num_used_blocks == 2
    assert s.finish(0, FinishReason.STOP, 2.0) is seq
    assert s.finish(0, FinishReason.ABORT, 3.0) is None
    assert seq.finish_reason is FinishReason.STOP and seq.lifecycle.finish == 2.0
    assert s.block_manager.num_used_blocks == 0 and not s.has_work()


# --- the randomized invariant -------------------------------------------------------------
class SchedulerMachine(RuleBasedStateMachine):
    """Random operations on a real Scheduler + BlockManager with a tiny pool. The length cap
    (``capacity``) plays the engine's max_model_len, which the engine sets to the pool's size
    so that a preempted sequence can always come back."""

    @initialize(num_blocks=st.integers(2, 12), block_size=st.sampled_from([1, 2, 4]),
                budget=st.integers(1, 48), max_seqs=st.integers(1, 8), seed=st.integers(0, 999))
    def setup(self, num_blocks, block_size, budget, max_seqs, seed):
        self.s = make_scheduler(num_blocks, block_size, budget, max_seqs)
        self.bm = self.s.block_manager
        self.capacity = num_blocks * block_size
        self.rng = random.Random(seed)
        self.next_id = 0
        self.now = 0.0
        self.all: dict[int, Sequence] = {}
        self.aborted: set[int] = set()
        self.preemptions = 0

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def _live(self) -> list[int]:
        return sorted(self.s.seqs)

    def _add(self, num_prompt: int, max_tokens: int, ignore_eos: bool) -> None:
        seq = make_seq(self.next_id, num_prompt, max_tokens, ignore_eos=ignore_eos,
                       stop_token_ids=[3] if self.next_id % 3 == 0 else [])
        self.next_id += 1
        if num_prompt >= self.capacity:  # the engine refuses these prompts up front
            with pytest.raises(ValueError):
                self.s.add(seq, self._tick())
            return
        self.s.add(seq, self._tick())
        self.all[seq.seq_id] = seq

    @rule(reqs=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40), st.booleans()),
                        min_size=1, max_size=4))
    def add(self, reqs):
        for num_prompt, max_tokens, ignore_eos in reqs:
            self._add(num_prompt, max_tokens, ignore_eos)

    def _step(self, abort_in_flight: bool) -> None:
        out = self.s.schedule(self._tick())
        if out is None:
            assert not self.s.running, "running sequences but nothing scheduled"
            return
        self.preemptions += len(out.preempted)
        if out.preempted and currently_in_test_context():
            event("preempted")
        ids = [sc.seq_id for sc in out.seqs]
        assert len(set(ids)) == len(ids)
        blocks = [b for sc in out.seqs for b in sc.block_table]
        assert len(set(blocks)) == len(blocks), "two scheduled sequences share a block"
        for sc in out.seqs:
            assert len(sc.block_table) * self.bm.block_size >= sc.context_len
            assert list(sc.block_table) == self.bm.block_table(sc.seq_id)[:len(sc.block_table)]
        if out.phase is Phase.PREFILL:
            assert out.num_batched_tokens <= max(self.s.config.max_num_batched_tokens,
                                                 out.seqs[0].num_new_tokens)
        else:
            assert all(sc.num_new_tokens == 1 for sc in out.seqs)
        assert len(out.seqs) <= self.s.config.max_num_seqs
        if abort_in_flight and ids:
            victim = self.rng.choice(ids)
            self.s.abort(victim, self.now)
            self.aborted.add(victim)
        tokens = [EOS if self.rng.random() < 0.05 else self.rng.randrange(3, 500) for _ in ids]
        self.s.on_step_done(out, tokens, self._tick())
        for sid in ids:  # the engine's length cap (max_model_len = pool size)
            seq = self.all[sid]
            if not seq.is_finished and seq.num_tokens >= self.capacity:
                self.s.finish(sid, FinishReason.LENGTH, self.now)

    @rule(n=st.integers(1, 6))
    def step(self, n):
        for _ in range(n):
            self._step(abort_in_flight=False)

    @rule()
    def step_with_abort_in_flight(self):
        self._step(abort_in_flight=True)

    @precondition(lambda self: self.s.seqs)
    @rule(data=st.data())
    def abort(self, data):
        sid = data.draw(st.sampled_from(self._live()))
        assert self.s.abort(sid, self._tick()) is self.all[sid]
        self.aborted.add(sid)

    @precondition(lambda self: self.s.seqs)
    @rule(data=st.data())
    def stop(self, data):  # e.g. a stop string matched in the detokenized text
        sid = data.draw(st.sampled_from(self._live()))
        self.s.finish(sid, FinishReason.STOP, self._tick())

    @invariant()
    def blocks_are_consistent(self):
        if not hasattr(self, "s"):
            return
        check_tables(self.bm)
        holders = set(self.bm.held_by())
        running = {seq.seq_id for seq in self.s.running}
        assert holders <= running, "a sequence that is not running holds blocks"
        for seq in self.s.running:
            assert self.bm.num_slots(seq.seq_id) >= seq.num_computed_tokens
        for sid, seq in self.all.items():
            if seq.is_finished:
                assert not self.bm.has(sid) and sid not in self.s.seqs
            assert seq.num_tokens <= self.capacity

    def teardown(self):
        if not hasattr(self, "s"):
            return
        for _ in range(20 * (len(self.all) + 1) * self.capacity):
            if not self.s.has_work():
                break
            self._step(abort_in_flight=False)
        assert not self.s.has_work(), "the scheduler did not drain (livelock)"
        assert self.bm.num_used_blocks == 0
        assert self.bm.num_free_blocks == self.bm.num_blocks
        assert not self.s.seqs
        for sid, seq in self.all.items():
            assert seq.is_finished
            if sid not in self.aborted:
                assert seq.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
                assert seq.lifecycle.finish is not None


SchedulerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSchedulerBlocks = SchedulerMachine.TestCase


def test_the_random_runs_do_preempt():
    """Guard the randomized test's reach: a fixed busy run preempts and still drains."""
    m = SchedulerMachine()
    m.setup(num_blocks=4, block_size=4, budget=32, max_seqs=4, seed=1)
    m.add([(3 + i, 12, True) for i in range(6)])
    for _ in range(30):
        m.step(1)
        m.blocks_are_consistent()
    assert m.preemptions > 0
    m.teardown()
