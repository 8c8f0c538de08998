"""The simulator's fast path for decode steps: same stamps, little work per step.

Driving ``Scheduler.schedule``/``on_step_done`` costs a few microseconds per sequence per
decode step (about 3 us measured on the 2-core dev box), which makes a goodput search over
hundreds of simulations of thousands of decode steps too slow. Between two events that
touch an instance, a decode step does the same thing to every sequence of its batch: one
more token, one more KV slot. This module defers that per-sequence work.

Sequences are decoded in *groups*: a group is the sequence list of one decode step (with
pipeline parallelism, one micro-batch), and it runs again, lazily, as long as the scheduler
would pick exactly the same list. When the scheduler's pick changes (a sequence joined the
running list, one finished, the micro-batch cap moved), the group is re-formed: sequences
that leave a group are brought up to date and forgotten, sequences that enter one start
from their exact state. A sequence in a group that is idle (no step in flight) is never
touched by the scheduler, so this is safe at any time.

Invariant while an instance runs lazily: everything the scheduler reads outside the decode
step is exact: the ``running`` list (membership and order), the block manager (a sequence
gets its next block at the very step the scheduler would reserve it), ``pending`` /
``pulling`` / ``waiting``. Only the token lists, token times and ``num_computed_tokens`` of
sequences in groups lag; :meth:`LazyDecode.detach_idle` brings every sequence the scheduler
may touch up to date before a normal ``schedule`` (sequences in a step in flight are busy,
so the scheduler leaves them alone), and a sequence is brought up to date just before its
last token, which goes through ``Scheduler.on_step_done`` itself, so finishing uses the
scheduler's own code.

A lazy step is taken only when the scheduler would decode its pick with no preemption: no
waiting sequence can be prefilled now (the caller checks), and the blocks the step needs are
free. Otherwise the simulator takes a normal scheduler step.
``tests/placement/test_lazy_decode.py`` checks that both paths give identical stamps.
"""

from __future__ import annotations

from collections.abc import Collection

from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.scheduler import Phase, ScheduledSeq, Scheduler, SchedulerOutput
from dsbox.engine.core.sequence import Sequence

IDLE = "idle"  # what ``try_start`` returns when the scheduler would run no decode step


class _Member:
    """A sequence of a group, as of its last sync (``base``: the group's step index then;
    ``group`` is None once it left the group)."""

    __slots__ = ("seq", "group", "base", "num_tokens")

    def __init__(self, seq: Sequence, group: Group, base: int) -> None:
        self.seq = seq
        self.group: Group | None = group
        self.base = base
        self.num_tokens = seq.num_tokens


class Group:
    """A decode step's sequences, run lazily step after step; the ``output`` of a lazy step
    in the simulator's event queue."""

    __slots__ = ("seqs", "ids", "times", "cross_at", "finish_at", "newcomers", "sum_context",
                 "batch_size", "in_flight")

    def __init__(self) -> None:
        self.seqs: list[Sequence] = []                 # in the scheduler's running order
        self.ids: list[int] = []                       # their seq ids
        self.times: list[float] = []                   # end time of each completed step
        self.cross_at: dict[int, list[_Member]] = {}   # step -> members needing a new block
        self.finish_at: dict[int, list[_Member]] = {}  # step -> members finishing there
        self.newcomers: list[_Member] = []             # no decode_start stamp yet
        self.sum_context = 0                           # sum of num_tokens at the next step
        self.batch_size = 0                            # size of the step in flight
        self.in_flight = False


class LazyDecode:
    """Deferred decode steps of one instance's scheduler."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.block_manager: BlockManager = scheduler.block_manager
        self.block_size = scheduler.block_manager.block_size
        self.members: dict[int, _Member] = {}
        self.groups: set[Group] = set()  # groups with members (and maybe a few empty)
        self.num_busy = 0                # members in a step in flight

    # --- membership ----------------------------------------------------------------------
    def _join(self, g: Group, seq: Sequence) -> None:
        """``seq`` (exact state, in no group) enters the idle group ``g``."""
        step = len(g.times)
        m = _Member(seq, g, step)
        held = len(self.block_manager.block_table(seq.seq_id))
        first_cross = max(0, held * self.block_size - m.num_tokens + 1)
        g.cross_at.setdefault(step + first_cross, []).append(m)
        last = step + seq.params.max_tokens - seq.num_output_tokens - 1
        g.finish_at.setdefault(last, []).append(m)
        g.sum_context += m.num_tokens
        self.members[seq.seq_id] = m
        if seq.lifecycle.decode_start is None:
            g.newcomers.append(m)

    def _detach(self, m: _Member) -> None:
        """Bring ``m`` (in an idle group) up to date and forget it; the caller fixes the
        group's ``seqs``/``ids``."""
        g = m.group
        self._sync(m, len(g.times))
        g.sum_context -= m.num_tokens
        del self.members[m.seq.seq_id]
        m.group = None

    def detach_idle(self) -> None:
        """Bring every sequence that is not in a step in flight up to date and forget it
        (before a normal scheduler step, which may touch any of them)."""
        for m in list(self.members.values()):
            g = m.group
            if not g.in_flight:
                self._detach(m)
                g.seqs = []
                g.ids = []
        self.groups = {g for g in self.groups if g.seqs}

    def _group_for(self, chosen: list[Sequence]) -> Group:
        """The idle group whose sequences are exactly ``chosen`` (re-formed if needed)."""
        members = self.members
        first = members.get(chosen[0].seq_id)
        g = first.group if first is not None else None
        if g is not None:
            seqs = g.seqs
            if seqs == chosen:
                return g
            n = len(seqs)
            if n < len(chosen) and chosen[:n] == seqs:  # only newcomers at the end
                tail = chosen[n:]
            else:
                keep = {s.seq_id for s in chosen}
                for i in g.ids:
                    if i not in keep:
                        self._detach(members[i])
                tail = [s for s in chosen
                        if (m := members.get(s.seq_id)) is None or m.group is not g]
        else:
            g = Group()
            self.groups.add(g)
            tail = chosen
        others: set[Group] = set()
        for s in tail:
            m = members.get(s.seq_id)
            if m is not None:  # leaves another idle group
                others.add(m.group)
                self._detach(m)
            self._join(g, s)
        for h in others:
            h.seqs = [s for s in h.seqs
                      if (m := members.get(s.seq_id)) is not None and m.group is h]
            h.ids = [s.seq_id for s in h.seqs]
            if not h.seqs:
                self.groups.discard(h)
        g.seqs = list(chosen)
        g.ids = [s.seq_id for s in chosen]
        return g

    # --- bringing sequences up to date ---------------------------------------------------
    def _sync(self, m: _Member, upto: int) -> None:
        k = upto - m.base
        if k <= 0:
            return
        seq = m.seq
        seq.output_token_ids.extend([0] * k)
        seq.lifecycle.token_times.extend(m.group.times[m.base:upto])
        m.num_tokens += k
        seq.num_computed_tokens = m.num_tokens - 1
        m.base = upto

    def materialize(self) -> None:
        """Apply every completed lazy step to every member."""
        for m in self.members.values():
            self._sync(m, len(m.group.times))

    # --- one lazy step -------------------------------------------------------------------
    def try_start(self, now: float, busy: Collection[int] = (),
                  cap: int | None = None) -> Group | str | None:
        """Start at ``now`` the decode step ``Scheduler.schedule(now, busy', cap)`` would
        take, lazily, if it takes it without preemption, where ``busy'`` is ``busy`` (the
        sequences of scheduler outputs in flight) and those of the lazy groups in flight:
        returns its group; :data:`IDLE` when the scheduler would run no step; None when a
        normal step must be taken instead (the caller calls :meth:`detach_idle` first).
        The caller has checked that no waiting sequence can be prefilled now (the
        scheduler's first choice)."""
        if cap == 0:  # pp micro-batches in flight: no decode step now
            return IDLE
        running = self.scheduler.running
        if busy or self.num_busy:
            chosen = None if busy else self._only_idle_group(len(running))
            if chosen is None:
                skip = self.in_flight_ids()
                skip.update(busy)
                chosen = [s for s in running if s.seq_id not in skip]
        else:
            chosen = running
        if cap is not None and len(chosen) > cap:
            chosen = chosen[:cap]
        if not chosen:
            return IDLE
        first = self.members.get(chosen[0].seq_id)
        g = first.group if first is not None else None
        if g is None or g.seqs != chosen:
            g = self._group_for(chosen)
        step = len(g.times)
        cross = g.cross_at.get(step)
        if cross:
            crossers = [m for m in cross if m.group is g]
            bm = self.block_manager
            if len(crossers) > bm.num_free_blocks:
                return None
            del g.cross_at[step]
            if crossers:
                bm.grow([m.seq.seq_id for m in crossers])  # each needs one block more
                g.cross_at.setdefault(step + self.block_size, []).extend(crossers)
        if g.newcomers:
            for m in g.newcomers:
                if m.group is g and m.seq.lifecycle.decode_start is None:
                    m.seq.lifecycle.decode_start = now
            g.newcomers.clear()
        size = g.batch_size = len(g.seqs)
        g.in_flight = True
        self.num_busy += size
        return g

    def _only_idle_group(self, num_running: int) -> list[Sequence] | None:
        """The sequences of the one idle group when they are all the running sequences not
        in a lazy step in flight (then, in running order, they are what the scheduler sees
        as not busy); None when that is not known without a scan of the running list."""
        if num_running != len(self.members):  # a running sequence in no group
            return None
        idle = None
        for g in list(self.groups):
            if not g.seqs:
                self.groups.discard(g)
            elif not g.in_flight:
                if idle is not None:
                    return None
                idle = g
        return idle.seqs if idle is not None else None

    def in_flight_ids(self) -> set[int]:
        """The sequences of the lazy steps in flight."""
        return {i for g in self.groups if g.in_flight for i in g.ids}

    def complete(self, g: Group, now: float) -> list[Sequence]:
        """The lazy step of ``g`` ended at ``now``; returns the sequences that finished."""
        step = len(g.times)
        g.times.append(now)
        g.in_flight = False
        self.num_busy -= g.batch_size
        g.sum_context += g.batch_size
        ending = [m for m in g.finish_at.pop(step, ()) if m.group is g]
        if not ending:
            return []
        scheduled = []
        for m in ending:
            self._sync(m, step)
            seq = m.seq
            scheduled.append(ScheduledSeq(seq.seq_id, m.num_tokens - 1, m.num_tokens, ()))
            m.group = None
            del self.members[seq.seq_id]
            g.sum_context -= m.num_tokens + 1
            g.seqs.remove(seq)
            g.ids.remove(seq.seq_id)
        if not g.seqs:
            self.groups.discard(g)
        out = SchedulerOutput(Phase.DECODE, tuple(scheduled))
        return self.scheduler.on_step_done(out, [0] * len(scheduled), now)
