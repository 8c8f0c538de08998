"""The lean step protocol: a step carries only what changed since the last one.

A worker keeps each request's sampling parameters and block table
(:class:`WorkerRequests`); the engine's :class:`StepEncoder` (one per instance) remembers
what the instance's workers know and sends, with each step, only the new requests (with
their parameters and whole block table), the blocks appended to known ones, and the
requests to forget (finished, aborted, handed off or preempted), as vLLM v1 does. The
per-sequence part of a step is a few flat tuples of integers (positions, token ids, how
many tokens each has generated), so the message stays small at large batches.

The in-process executor goes through the same encoder and the same ``WorkerRequests``, so
both modes run the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import Phase, SchedulerOutput
from dsbox.engine.core.sequence import Sequence
from dsbox.engine.core.step_batch import StepBatch


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request a worker has not seen (or must see afresh after a preemption)."""

    seq_id: int
    params: SamplingParams
    block_table: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StepDelta:
    """One step, as sent to every worker of an instance."""

    is_prefill: bool
    seq_ids: tuple[int, ...]
    token_ids: tuple[int, ...]         # flat: every sequence's new tokens
    starts: tuple[int, ...]            # first position computed, per sequence
    context_lens: tuple[int, ...]      # KV length after the step, per sequence
    output_index: tuple[int, ...]      # tokens generated so far, per sequence (sampling)
    new: tuple[NewRequest, ...] = ()
    appended: tuple[tuple[int, tuple[int, ...]], ...] = ()  # (seq id, blocks to add)
    dropped: tuple[int, ...] = ()      # forget these first


@dataclass(slots=True)
class StepEncoder:
    """Engine side, one per instance: what its workers know, and the delta of a step."""

    known: dict[int, int] = field(default_factory=dict)  # seq id -> blocks sent
    to_drop: list[int] = field(default_factory=list)

    def take_dropped(self) -> tuple[int, ...]:
        """The requests to forget not yet sent (for a ``Forget`` message); clears them."""
        dropped, self.to_drop = tuple(self.to_drop), []
        return dropped

    def clear(self) -> None:
        """The workers are gone (a failed instance): there is nothing left to tell them."""
        self.known.clear()
        self.to_drop.clear()

    def forget(self, seq_id: int) -> None:
        """The instance let go of ``seq_id`` (or must resend it whole): its workers drop it
        with the next step."""
        if self.known.pop(seq_id, None) is not None:
            self.to_drop.append(seq_id)

    def encode(self, out: SchedulerOutput, seqs: dict[int, Sequence]) -> StepDelta:
        for sid in out.preempted:
            self.forget(sid)
        known = self.known
        tokens: list[int] = []
        new: list[NewRequest] = []
        appended: list[tuple[int, tuple[int, ...]]] = []
        out_index = []
        for s in out.seqs:
            seq = seqs[s.seq_id]
            if s.num_new_tokens == 1:
                tokens.append(seq.last_token_id)
            else:
                tokens.extend(seq.token_ids_from(s.start)[: s.num_new_tokens])
            out_index.append(seq.num_output_tokens)
            sent = known.get(s.seq_id)
            table = s.block_table
            if sent is None:
                new.append(NewRequest(s.seq_id, seq.params, table))
            elif len(table) > sent:
                appended.append((s.seq_id, table[sent:]))
            known[s.seq_id] = len(table)
        dropped = self.take_dropped()
        return StepDelta(
            is_prefill=out.phase is Phase.PREFILL,
            seq_ids=tuple(s.seq_id for s in out.seqs),
            token_ids=tuple(tokens),
            starts=tuple(s.start for s in out.seqs),
            context_lens=tuple(s.context_len for s in out.seqs),
            output_index=tuple(out_index),
            new=tuple(new), appended=tuple(appended), dropped=dropped)


@dataclass(slots=True)
class WorkerRequests:
    """Worker side: the requests this worker knows, kept up to date by each step."""

    params: dict[int, SamplingParams] = field(default_factory=dict)
    tables: dict[int, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tables)

    def drop(self, seq_ids) -> None:
        for sid in seq_ids:
            self.params.pop(sid, None)
            self.tables.pop(sid, None)

    def apply(self, delta: StepDelta) -> StepBatch:
        """Take in the changes of ``delta`` and return the step as the runner's input."""
        params, tables = self.params, self.tables
        self.drop(delta.dropped)
        for req in delta.new:
            params[req.seq_id] = req.params
            tables[req.seq_id] = list(req.block_table)
        for sid, blocks in delta.appended:
            tables[sid].extend(blocks)
        ids = delta.seq_ids
        return StepBatch(
            is_prefill=delta.is_prefill, seq_ids=ids, token_ids=delta.token_ids,
            starts=delta.starts, context_lens=delta.context_lens,
            block_tables=tuple(tables[s] for s in ids),
            params=tuple(params[s] for s in ids), output_index=delta.output_index)
