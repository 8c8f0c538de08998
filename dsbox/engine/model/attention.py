"""Attention over the paged KV cache, behind one interface with two backends.

``AttentionMetadata`` describes a step (prefill or decode) for every layer; a backend writes
the step's new K/V into the layer's paged cache and computes attention:

- ``torch``: the torch references beside the kernels (``dsbox.kernels.*_ref``); the CPU default.
- ``triton``: the Triton kernels (compiled on CUDA, ``TRITON_INTERPRET=1`` on CPU); the CUDA
  default.

The model calls ``backend.forward(...)`` and knows nothing else about the cache layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

BACKENDS = ("torch", "triton")


@dataclass(slots=True)
class AttentionMetadata:
    """Tensors describing one step's sequences (on the model's device)."""

    is_prefill: bool
    slot_mapping: torch.Tensor   # [num_tokens] int64, -1 = do not store
    block_tables: torch.Tensor   # [batch, max_blocks] int32
    seq_lens: torch.Tensor       # [batch] int32: KV length including this step's tokens
    cu_seqlens_q: torch.Tensor   # [batch + 1] int32 (prefill); arange (decode)
    max_q_len: int
    max_seq_len: int


class AttentionBackend:
    """Write K/V into the paged cache, then attend. One instance per runner; a subclass only
    picks the three functions (KV write, prefill attention, decode attention)."""

    name = "base"

    def __init__(self, write, prefill, decode) -> None:
        self._write = write
        self._prefill = prefill
        self._decode = decode

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        self._write(k, v, k_cache, v_cache, meta.slot_mapping)
        out = torch.empty_like(q)
        if meta.is_prefill:
            return self._prefill(q, k_cache, v_cache, meta.cu_seqlens_q, meta.seq_lens,
                                 meta.block_tables, scale, out, max_q_len=meta.max_q_len)
        return self._decode(q, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale, out)


class TorchAttention(AttentionBackend):
    name = "torch"

    def __init__(self) -> None:
        from dsbox.kernels.decode_attention import decode_attention_ref
        from dsbox.kernels.kv_write import write_kv_ref
        from dsbox.kernels.prefill_attention import prefill_attention_ref

        super().__init__(write_kv_ref, prefill_attention_ref, decode_attention_ref)


class TritonAttention(AttentionBackend):
    name = "triton"

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            # the interpreter must be on before triton and the kernel modules are imported
            os.environ.setdefault("TRITON_INTERPRET", "1")
        from dsbox.kernels.decode_attention import decode_attention
        from dsbox.kernels.kv_write import write_kv
        from dsbox.kernels.prefill_attention import prefill_attention

        super().__init__(write_kv, prefill_attention, decode_attention)


def make_attention_backend(name: str | None, device: torch.device) -> AttentionBackend:
    """``None`` picks the default: Triton on CUDA, torch elsewhere."""
    if name is None:
        name = "triton" if device.type == "cuda" else "torch"
    if name == "torch":
        return TorchAttention()
    if name == "triton":
        return TritonAttention(device)
    raise ValueError(f"attention_backend must be one of {BACKENDS}, got {name!r}")
