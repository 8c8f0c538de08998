"""The simulator's fast path for decode steps: same stamps, O(changes) work per step.

Driving ``Scheduler.schedule``/``on_step_done`` costs a few microseconds per sequence per
decode step (about 3 us measured on the 2-core dev box), which makes a goodput search over
hundreds of simulations of thousands of decode steps too slow. Between two events that
touch an instance, a decode step does the same thing to every running sequence: one more
token, one more KV slot. This module defers that per-sequence work.

Invariant while an instance runs lazily: everything the scheduler reads outside the decode
step is exact: the ``running`` list (membership and order), the block manager (a sequence
gets its next block at the very step the scheduler would reserve it), ``pending`` /
``pulling`` / ``waiting``. Only the token lists, token times and ``num_computed_tokens`` of
running sequences lag; :meth:`LazyDecode.materialize` brings them up to date before any
scheduler call that reads them (a normal ``schedule``), and a sequence is brought up to date
just before its last token, which goes through ``Scheduler.on_step_done`` itself, so finishing
uses the scheduler's own code.

A lazy step is taken only when the scheduler would decode every running sequence with no
preemption: no waiting sequence can be prefilled now, and the blocks the step needs are
free. Otherwise the simulator takes a normal scheduler step.
``tests/placement/test_lazy_decode.py`` checks that both paths give identical stamps.
"""

from __future__ import annotations

from dsbox.engine.block_manager import BlockManager
from dsbox.engine.scheduler import Phase, ScheduledSeq, Scheduler, SchedulerOutput
from dsbox.engine.sequence import Sequence


class _Member:
    """A running sequence's state at its last sync (``base``: the lazy step index then)."""

    __slots__ = ("seq", "base", "num_tokens", "alive")

    def __init__(self, seq: Sequence, base: int) -> None:
        self.seq = seq
        self.base = base
        self.num_tokens = seq.num_tokens
        self.alive = True


class LazyDecode:
    """Deferred decode steps of one instance's scheduler."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.block_manager: BlockManager = scheduler.block_manager
        self.block_size = scheduler.block_manager.block_size
        self.members: dict[int, _Member] = {}
        self.cross_at: dict[int, list[_Member]] = {}   # step -> members needing a new block
        self.finish_at: dict[int, list[_Member]] = {}  # step -> members finishing there
        self.newcomers: list[_Member] = []             # no decode_start stamp yet
        self.times: list[float] = []                   # end time of each lazy step
        self.num_started = 0                           # lazy steps started
        self.sum_context = 0                           # sum of num_tokens of members
        self.batch_size = 0                            # size of the lazy step in flight

    # --- membership ----------------------------------------------------------------------
    def join(self, seq: Sequence) -> None:
        """``seq`` entered the running list (exact state); it joins the next step."""
        m = _Member(seq, self.num_started)
        held = len(self.block_manager.block_table(seq.seq_id))
        first_cross = max(0, held * self.block_size - m.num_tokens + 1)
        self.cross_at.setdefault(m.base + first_cross, []).append(m)
        last = m.base + seq.params.max_tokens - seq.num_output_tokens - 1
        self.finish_at.setdefault(last, []).append(m)
        self.sum_context += m.num_tokens
        self.members[seq.seq_id] = m
        if seq.lifecycle.decode_start is None:
            self.newcomers.append(m)

    def rebuild(self) -> None:
        """Forget all members and join every running sequence again (after a normal step)."""
        for m in self.members.values():
            m.alive = False
        self.members.clear()
        self.cross_at.clear()
        self.finish_at.clear()
        self.newcomers.clear()
        self.sum_context = 0
        for seq in self.scheduler.running:
            self.join(seq)

    # --- bringing sequences up to date ---------------------------------------------------
    def _sync(self, m: _Member, upto: int) -> None:
        k = upto - m.base
        if k <= 0:
            return
        seq = m.seq
        seq.output_token_ids.extend([0] * k)
        seq.lifecycle.token_times.extend(self.times[m.base:upto])
        m.num_tokens += k
        seq.num_computed_tokens = m.num_tokens - 1
        m.base = upto

    def materialize(self) -> None:
        """Apply every completed lazy step to every member."""
        upto = len(self.times)
        for m in self.members.values():
            self._sync(m, upto)

    # --- one lazy step -------------------------------------------------------------------
    def try_start(self, now: float) -> tuple[int, int] | None:
        """Start a lazy step at ``now`` if the scheduler would decode all running sequences
        without preemption; returns ``(batch_size, sum_context)`` or None (take a normal
        step instead; the caller materializes first). The caller has checked that no
        waiting sequence can be prefilled now (the scheduler's first choice)."""
        sched = self.scheduler
        if not sched.running:
            return None
        step = self.num_started
        crossers = [m for m in self.cross_at.get(step, ()) if m.alive]
        if len(crossers) > self.block_manager.num_free_blocks:
            return None
        self.cross_at.pop(step, None)
        nxt = step + self.block_size
        bm = self.block_manager
        for m in crossers:
            bm.reserve(m.seq.seq_id, m.num_tokens + step - m.base)
        if crossers:
            self.cross_at.setdefault(nxt, []).extend(crossers)
        for m in self.newcomers:
            if m.alive and m.seq.lifecycle.decode_start is None:
                m.seq.lifecycle.decode_start = now
        self.newcomers.clear()
        self.num_started += 1
        self.batch_size = len(sched.running)
        return self.batch_size, self.sum_context

    def complete(self, now: float) -> list[Sequence]:
        """The lazy step in flight ended at ``now``; returns the sequences that finished."""
        step = len(self.times)
        self.times.append(now)
        self.sum_context += self.batch_size
        ending = [m for m in self.finish_at.pop(step, ()) if m.alive]
        if not ending:
            return []
        scheduled = []
        for m in ending:
            self._sync(m, step)
            scheduled.append(ScheduledSeq(m.seq.seq_id, m.num_tokens - 1, m.num_tokens, ()))
            m.alive = False
            del self.members[m.seq.seq_id]
            self.sum_context -= m.num_tokens + 1
        out = SchedulerOutput(Phase.DECODE, tuple(scheduled))
        return self.scheduler.on_step_done(out, [0] * len(scheduled), now)
