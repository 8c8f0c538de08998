"""StepBatch: one scheduled step as plain, picklable data for a model runner.

Built from a ``SchedulerOutput`` and the sequences it names; a runner (in-process or in a
worker process) turns it into tensors. Nothing in it refers back to scheduler objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import Phase, SchedulerOutput
from dsbox.engine.core.sequence import Sequence


@dataclass(frozen=True, slots=True)
class StepBatch:
    is_prefill: bool
    seq_ids: tuple[int, ...]
    token_ids: tuple[int, ...]            # flat, all sequences' new tokens
    starts: tuple[int, ...]               # first position computed, per sequence
    context_lens: tuple[int, ...]         # KV length after this step, per sequence
    block_tables: tuple[tuple[int, ...], ...]
    params: tuple[SamplingParams, ...]
    output_index: tuple[int, ...]         # how many tokens each sequence has generated

    @property
    def num_seqs(self) -> int:
        return len(self.seq_ids)

    @property
    def query_lens(self) -> list[int]:
        return [c - s for s, c in zip(self.starts, self.context_lens, strict=True)]


def build_step_batch(output: SchedulerOutput, seqs: dict[int, Sequence]) -> StepBatch:
    tokens: list[int] = []
    params, out_index = [], []
    for s in output.seqs:
        seq = seqs[s.seq_id]
        tokens.extend(seq.token_ids_from(s.start)[: s.num_new_tokens])
        params.append(seq.params)
        out_index.append(seq.num_output_tokens)
    return StepBatch(
        is_prefill=output.phase is Phase.PREFILL,
        seq_ids=tuple(s.seq_id for s in output.seqs),
        token_ids=tuple(tokens),
        starts=tuple(s.start for s in output.seqs),
        context_lens=tuple(s.context_len for s in output.seqs),
        block_tables=tuple(s.block_table for s in output.seqs),
        params=tuple(params),
        output_index=tuple(out_index),
    )
