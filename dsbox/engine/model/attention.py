"""Attention over the paged KV cache, behind one interface with two backends.

``AttentionMetadata`` describes a step (prefill or decode) for every layer; a backend writes
the step's new K/V into the layer's paged cache and computes attention:

- ``torch``: the torch references beside the kernels (``dsbox.kernels.*_ref``); the CPU default.
- ``triton``: the Triton kernels, the CUDA default: compiled on CUDA; on the CPU only in
  Triton's interpreter, which must be on from process start (``dsbox.kernels`` turns it on
  where there is no CUDA; it is never set on a machine with CUDA, whose workers would
  inherit it).

The model calls ``backend.forward(...)`` and knows nothing else about the cache layout.
Decode attention runs on a preallocated workspace (:meth:`AttentionBackend.reserve_workspace`)
so that a decode step allocates nothing of its own and can be captured in a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BACKENDS = ("torch", "triton")


@dataclass(slots=True)
class AttentionMetadata:
    """Tensors describing one step's sequences (on the model's device)."""

    is_prefill: bool
    slot_mapping: torch.Tensor   # [num_tokens] int32, -1 = do not store
    block_tables: torch.Tensor   # [batch, max_blocks] int32
    seq_lens: torch.Tensor       # [batch] int32: KV length including this step's tokens
    cu_seqlens_q: torch.Tensor   # [batch + 1] int32 (prefill); arange (decode)
    max_q_len: int
    max_seq_len: int


class AttentionBackend:
    """Write K/V into the paged cache, then attend. One instance per runner; a subclass only
    picks the three functions (KV write, prefill attention, decode attention)."""

    name = "base"
    compiles = False  # True: the kernels compile per shape class (warm them up)

    def __init__(self, write, prefill, decode) -> None:
        self._write = write
        self._prefill = prefill
        self._decode = decode
        self.workspace: torch.Tensor | None = None

    def reserve_workspace(self, max_batch: int, num_heads: int, head_dim: int,
                          device: torch.device) -> None:
        """Allocate decode scratch for batches up to ``max_batch`` (before any graph
        capture). Without it the first decode step allocates one, grown as batches grow."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        self._write(k, v, k_cache, v_cache, meta.slot_mapping)
        out = torch.empty_like(q)
        if meta.is_prefill:
            return self._prefill(q, k_cache, v_cache, meta.cu_seqlens_q, meta.seq_lens,
                                 meta.block_tables, scale, out, max_q_len=meta.max_q_len)
        if self.workspace is None or self.workspace.shape[0] < q.shape[0]:
            self.reserve_workspace(q.shape[0], q.shape[1], q.shape[2], q.device)
        return self._decode(q, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale, out,
                            self.workspace)


class TorchAttention(AttentionBackend):
    name = "torch"

    def __init__(self) -> None:
        from dsbox.kernels.decode_attention import decode_attention_ref
        from dsbox.kernels.kv_write import write_kv_ref
        from dsbox.kernels.prefill_attention import prefill_attention_ref

        super().__init__(write_kv_ref, prefill_attention_ref, decode_attention_ref)


class TritonAttention(AttentionBackend):
    name = "triton"
    compiles = True

    def __init__(self, device: torch.device) -> None:
        from dsbox.kernels import ensure_mode

        ensure_mode(device)  # before the kernel modules import triton
        from dsbox.kernels.decode_attention import decode_attention
        from dsbox.kernels.kv_write import write_kv
        from dsbox.kernels.prefill_attention import prefill_attention

        super().__init__(write_kv, prefill_attention, decode_attention)

    def reserve_workspace(self, max_batch: int, num_heads: int, head_dim: int,
                          device: torch.device) -> None:
        from dsbox.kernels.decode_attention import decode_workspace

        self.workspace = decode_workspace(max_batch, num_heads, head_dim, device)


def make_attention_backend(name: str | None, device: torch.device) -> AttentionBackend:
    """``None`` picks the default: Triton on CUDA, torch elsewhere."""
    if name is None:
        name = "triton" if device.type == "cuda" else "torch"
    if name == "torch":
        return TorchAttention()
    if name == "triton":
        return TritonAttention(device)
    raise ValueError(f"attention_backend must be one of {BACKENDS}, got {name!r}")
