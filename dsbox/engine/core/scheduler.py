"""Schedulers: which sequences run in the next step, and with which KV blocks.

Three classes over one mechanism, shared by the engine, the disaggregated runtime and the
simulator (which drives them with step times from the latency model):

- ``Scheduler``: the colocated (vLLM-style) baseline. Continuous batching, prefill first,
  FCFS, a token budget per prefill step and a cap on running sequences, preemption by
  recompute when blocks run out.
- ``PrefillScheduler``: a prefill instance. Batches waiting prompts up to the token budget
  (L_m), samples the first token and holds the KV until a decode instance pulls it.
- ``DecodeScheduler``: a decode instance. Pulls the KV of a waiting request only when it has
  the blocks for it, then decodes with continuous batching.

A step is described by a frozen ``SchedulerOutput``; the runner consumes it and returns one
sampled token per scheduled sequence to ``on_step_done``. No torch in here.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.sequence import FinishReason, Sequence, SequenceStatus


@dataclass(slots=True)
class SchedulerConfig:
    """Batching limits of one instance."""

    max_num_batched_tokens: int = 2048  # prefill token budget per step (L_m)
    max_num_seqs: int = 256             # running (decode) batch cap

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")


def decode_micro_batch_cap(num_running: int, pp: int, decode_in_flight: int = 0
                           ) -> int | None:
    """The most sequences the next decode step may take (None: no limit, without PP).

    An instance submits its next step whenever its first pipeline stage is free, so with
    ``pp`` stages several steps are in flight. Its running sequences go round the pipeline
    as ``pp`` decode micro-batches of at most ``ceil(num_running / pp)`` sequences each,
    and a new decode micro-batch starts only while fewer than ``pp`` are in flight
    (``decode_in_flight``; prefill steps do not count): sequences that join the running
    batch wait for a micro-batch to come back and join it instead of forming an extra
    one, so a round over the batch is ``pp`` micro-batches and pays the per-step cost
    ``pp`` times. 0 means no decode step now. The runtime and the simulator both follow
    this rule."""
    if pp == 1:
        return None
    if decode_in_flight >= pp:
        return 0
    return max(1, -(-num_running // pp))


class Phase(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True, slots=True)
class ScheduledSeq:
    """One sequence in a step: compute positions ``start .. context_len - 1``."""

    seq_id: int
    start: int
    context_len: int
    block_table: tuple[int, ...]

    @property
    def num_new_tokens(self) -> int:
        return self.context_len - self.start


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    phase: Phase
    seqs: tuple[ScheduledSeq, ...]
    preempted: tuple[int, ...] = ()

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.seqs)


class Scheduler:
    """Colocated scheduler: prefill first, FCFS, continuous batching, recompute preemption."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.seqs: dict[int, Sequence] = {}  # every sequence this scheduler has not let go of

    # --- intake and queries --------------------------------------------------------------
    def add(self, seq: Sequence, now: float) -> None:
        """Queue a new request for prefill."""
        self._check_fits(seq.num_prompt_tokens + 1, seq)
        seq.status = SequenceStatus.WAITING
        seq.lifecycle.prefill_queued = now
        self.waiting.append(seq)
        self.seqs[seq.seq_id] = seq

    def _check_fits(self, num_tokens: int, seq: Sequence) -> None:
        need = self.block_manager.blocks_for(num_tokens)
        if need > self.block_manager.num_blocks:
            raise ValueError(
                f"request {seq.seq_id}: {num_tokens} tokens need {need} KV blocks but the "
                f"pool has only {self.block_manager.num_blocks}")

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # --- one step ------------------------------------------------------------------------
    def schedule(self, now: float, busy: Collection[int] = (),
                 max_decode_seqs: int | None = None) -> SchedulerOutput | None:
        """The next step, or None when there is nothing to run. ``busy`` sequences are in a
        step still in flight (pipeline parallelism keeps several micro-batches in flight):
        they are neither scheduled nor preempted; ``max_decode_seqs`` caps a decode
        micro-batch (0: no decode step now, see :func:`decode_micro_batch_cap`)."""
        out = self.schedule_prefill(now)
        if out is None:
            out = self._schedule_decode(now, busy, max_decode_seqs)
        return out

    def _prefill_slots(self) -> int:
        return self.config.max_num_seqs - len(self.running)

    def schedule_prefill(self, now: float) -> SchedulerOutput | None:
        """A prefill step of waiting prompts (FCFS, token budget, free blocks), or None;
        None changes nothing."""
        bm = self.block_manager
        budget = self.config.max_num_batched_tokens
        slots = self._prefill_slots()
        chosen: list[ScheduledSeq] = []
        tokens = 0
        while self.waiting and len(chosen) < slots:
            seq = self.waiting[0]
            start = seq.num_computed_tokens
            n_new = seq.num_tokens - start
            if chosen and tokens + n_new > budget:
                break
            # keep one block per running sequence free so decode can make progress
            if not bm.can_reserve(seq.seq_id, seq.num_tokens, keep_free=len(self.running)):
                break
            self.waiting.popleft()
            table = bm.reserve(seq.seq_id, seq.num_tokens)
            seq.status = SequenceStatus.RUNNING
            if seq.lifecycle.prefill_start is None:
                seq.lifecycle.prefill_start = now
            chosen.append(ScheduledSeq(seq.seq_id, start, seq.num_tokens, tuple(table)))
            tokens += n_new
        if not chosen:
            return None
        return SchedulerOutput(Phase.PREFILL, tuple(chosen))

    def _schedule_decode(self, now: float, busy: Collection[int] = (),
                         limit: int | None = None) -> SchedulerOutput | None:
        bm = self.block_manager
        preempted: list[int] = []
        chosen: list[Sequence] = []
        queue = [s for s in self.running if s.seq_id not in busy]
        if limit is not None:
            queue = queue[:limit]
        while queue:
            seq = queue.pop(0)
            while not bm.can_reserve(seq.seq_id, seq.num_tokens):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    break
            else:
                bm.reserve(seq.seq_id, seq.num_tokens)
                chosen.append(seq)
        if not chosen:
            return SchedulerOutput(Phase.DECODE, (), tuple(preempted)) if preempted else None
        scheduled = []
        for seq in chosen:
            if seq.lifecycle.decode_start is None:
                seq.lifecycle.decode_start = now
            scheduled.append(ScheduledSeq(seq.seq_id, seq.num_tokens - 1, seq.num_tokens,
                                          tuple(bm.block_table(seq.seq_id))))
        return SchedulerOutput(Phase.DECODE, tuple(scheduled), tuple(preempted))

    def _preempt(self, seq: Sequence) -> None:
        """Recompute preemption: drop the KV, queue the sequence first for re-prefill."""
        self.running.remove(seq)
        self.block_manager.free(seq.seq_id)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.lifecycle.num_preemptions += 1
        self.waiting.appendleft(seq)

    def on_step_done(self, output: SchedulerOutput, token_ids: list[int],
                     now: float, logprobs: list | None = None) -> list[Sequence]:
        """Record one sampled token (and its logprob, when asked for) per scheduled
        sequence; returns the ones that finished."""
        finished = []
        for i, (sched, token) in enumerate(zip(output.seqs, token_ids, strict=True)):
            seq = self.seqs.get(sched.seq_id)
            if seq is None or seq.is_finished:  # aborted while the step ran
                continue
            seq.num_computed_tokens = sched.context_len
            seq.append_token(token, now, None if logprobs is None else logprobs[i])
            if output.phase is Phase.PREFILL:
                self._after_prefill(seq, now)
            reason = seq.check_stop()
            if reason is not None:
                self.finish(seq.seq_id, reason, now)
                finished.append(seq)
        return finished

    def _after_prefill(self, seq: Sequence, now: float) -> None:
        """Colocated: the sequence joins the decode batch at once (no transfer)."""
        lc = seq.lifecycle
        if lc.prefill_end is None:
            lc.prefill_end = lc.transfer_start = lc.transfer_end = lc.decode_queued = now
        if seq not in self.running:
            self.running.append(seq)

    # --- endings -------------------------------------------------------------------------
    def finish(self, seq_id: int, reason: FinishReason, now: float) -> Sequence | None:
        """End a sequence (stop, length, abort, error) and free its blocks. Idempotent."""
        seq = self.seqs.pop(seq_id, None)
        if seq is None:
            return None
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._forget(seq)
        self.block_manager.free(seq_id)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.lifecycle.finish = now
        return seq

    def _forget(self, seq: Sequence) -> None:
        """Drop ``seq`` from queues subclasses keep (hook)."""

    def abort(self, seq_id: int, now: float) -> Sequence | None:
        return self.finish(seq_id, FinishReason.ABORT, now)


class PrefillScheduler(Scheduler):
    """A prefill instance: prefill batches only; KV held after prefill until released."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        super().__init__(config, block_manager)
        self.prefilled: dict[int, Sequence] = {}  # KV held, waiting to be pulled

    def _prefill_slots(self) -> int:
        return self.config.max_num_seqs

    def schedule(self, now: float, busy: Collection[int] = (),
                 max_decode_seqs: int | None = None) -> SchedulerOutput | None:
        return self.schedule_prefill(now)

    def has_work(self) -> bool:
        return bool(self.waiting)

    def _after_prefill(self, seq: Sequence, now: float) -> None:
        seq.lifecycle.prefill_end = now
        seq.status = SequenceStatus.PREFILLED
        self.prefilled[seq.seq_id] = seq

    def release(self, seq_id: int) -> Sequence | None:
        """The decode side has the KV: free it here and let go of the sequence."""
        seq = self.prefilled.pop(seq_id, None)
        self.seqs.pop(seq_id, None)
        self.block_manager.free(seq_id)
        return seq

    def _forget(self, seq: Sequence) -> None:
        self.prefilled.pop(seq.seq_id, None)


class DecodeScheduler(Scheduler):
    """A decode instance: pulls prefilled KV when it has room, then decodes.

    Sequences preempted here are re-prefilled locally (recompute), through the inherited
    prefill path, before the next decode step.
    """

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        super().__init__(config, block_manager)
        self.pending: deque[Sequence] = deque()  # prefilled elsewhere, KV not pulled yet
        self.pulling: dict[int, Sequence] = {}   # blocks reserved, transfer in flight

    def add_pending(self, seq: Sequence, now: float) -> None:
        """A prefilled request is offered to this instance; it is pulled by ``admit``."""
        self._check_fits(seq.num_tokens, seq)
        seq.status = SequenceStatus.PENDING_PULL
        seq.lifecycle.decode_queued = now
        self.pending.append(seq)
        self.seqs[seq.seq_id] = seq

    def admit(self, now: float) -> list[Sequence]:
        """Reserve blocks for the pending requests that fit (FCFS); the caller transfers their
        KV into ``block_manager.block_table(seq_id)`` and then calls ``mark_pulled``."""
        bm = self.block_manager
        admitted = []
        while self.pending:
            busy = len(self.running) + len(self.pulling) + len(self.waiting)
            if busy >= self.config.max_num_seqs:
                break
            seq = self.pending[0]
            # room for the prompt's KV and the next token, and one block per running sequence
            if not bm.can_reserve(seq.seq_id, seq.num_tokens, keep_free=len(self.running)):
                break
            self.pending.popleft()
            bm.reserve(seq.seq_id, seq.num_tokens)
            self.pulling[seq.seq_id] = seq
            if seq.lifecycle.transfer_start is None:
                seq.lifecycle.transfer_start = now
            admitted.append(seq)
        return admitted

    def mark_pulled(self, seq_id: int, now: float) -> None:
        seq = self.pulling.pop(seq_id, None)
        if seq is None:  # aborted during the transfer
            return
        seq.lifecycle.transfer_end = now
        seq.num_computed_tokens = seq.num_tokens - 1
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.pending or self.pulling)

    def _forget(self, seq: Sequence) -> None:
        self.pulling.pop(seq.seq_id, None)
        if seq in self.pending:
            self.pending.remove(seq)

    def _after_prefill(self, seq: Sequence, now: float) -> None:  # local recompute only
        if seq not in self.running:
            self.running.append(seq)
