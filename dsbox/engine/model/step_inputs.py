"""One step's model inputs on the device, from a StepBatch, in one host-to-device copy.

Every integer a step needs (token ids, positions, KV slots, block tables, KV lengths,
cumulative query lengths, the row of each sequence's last token) goes into one int32 host
buffer (pinned on CUDA) that moves in one non-blocking copy; the step's tensors are views of
the device copy. Each view starts on a 16-byte boundary: Triton specialises pointer
arguments on 16-byte alignment, so a view at another offset would compile a second variant
of every kernel that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsbox.engine.core.step_batch import StepBatch
from dsbox.engine.model.attention import AttentionMetadata

ALIGN = 4  # int32 elements per 16 bytes
INT32_MAX = 2**31 - 1


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor   # [num_tokens] int32
    positions: torch.Tensor   # [num_tokens] int32
    meta: AttentionMetadata
    last_rows: torch.Tensor   # [batch] int32: row of each sequence's last token


def _pad(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def prepare_step(batch: StepBatch, block_size: int, device: torch.device) -> StepInputs:
    """The step's tensors on ``device`` (one host-to-device copy on CUDA)."""
    bs = block_size
    positions: list[int] = []
    slots: list[int] = []
    for start, ctx, table in zip(batch.starts, batch.context_lens, batch.block_tables,
                                 strict=True):
        for p in range(start, ctx):
            positions.append(p)
            slots.append(table[p // bs] * bs + p % bs)
    q_lens = batch.query_lens
    num_seqs = len(q_lens)
    width = max(len(t) for t in batch.block_tables)
    cu = [0]
    for n in q_lens:
        cu.append(cu[-1] + n)
    if slots and max(slots) > INT32_MAX:
        raise ValueError(f"KV slot {max(slots)} does not fit int32; use fewer or smaller blocks")

    segments: list[tuple[str, list[int]]] = [
        ("input_ids", list(batch.token_ids)),
        ("positions", positions),
        ("slot_mapping", slots),
        ("block_tables", [b for t in batch.block_tables for b in (*t, *[0] * (width - len(t)))]),
        ("seq_lens", list(batch.context_lens)),
        ("cu_seqlens_q", cu),
        ("last_rows", [c - 1 for c in cu[1:]]),
    ]
    host: list[int] = []
    offsets: dict[str, tuple[int, int]] = {}
    for name, values in segments:
        offsets[name] = (len(host), len(values))
        host.extend(values)
        host.extend([0] * (_pad(len(values)) - len(values)))
    if device.type == "cuda":
        buf = torch.tensor(host, dtype=torch.int32, pin_memory=True)
        buf = buf.to(device, non_blocking=True)
    else:
        buf = torch.tensor(host, dtype=torch.int32, device=device)

    def view(name: str) -> torch.Tensor:
        start, n = offsets[name]
        return buf[start:start + n]

    meta = AttentionMetadata(
        is_prefill=batch.is_prefill,
        slot_mapping=view("slot_mapping"),
        block_tables=view("block_tables").view(num_seqs, width),
        seq_lens=view("seq_lens"),
        cu_seqlens_q=view("cu_seqlens_q"),
        max_q_len=max(q_lens),
        max_seq_len=max(batch.context_lens),
    )
    return StepInputs(view("input_ids"), view("positions"), meta, view("last_rows"))
