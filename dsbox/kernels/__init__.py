"""Paged-attention kernels (Triton), each with a torch reference beside it.

One kernel per module:

- :mod:`dsbox.kernels.kv_write`: ``write_kv`` scatters new tokens' K/V into paged slots.
- :mod:`dsbox.kernels.prefill_attention`: ``prefill_attention``, causal varlen attention
  over the paged cache (fresh prompts and prompts continuing on cached context).
- :mod:`dsbox.kernels.decode_attention`: ``decode_attention``, split-KV (flash-decoding)
  attention of one new token per sequence over the paged cache.

This package imports neither triton nor the kernel modules, so ``import dsbox.kernels`` is
cheap. On a machine without CUDA it turns Triton's interpreter on (``TRITON_INTERPRET=1``,
unless already set) before any kernel module can import triton: there the kernels can only
run interpreted. The kernel modules themselves import triton only if it is installed: the torch
references (``*_ref``), which are the engine's CPU attention path, work without it.

Paged KV cache layout (per layer): ``k_cache`` and ``v_cache`` of shape
``[num_blocks, block_size, num_heads, head_dim]``; they may be strided views into a larger
pool, only the last dim must be contiguous. Block tables are int32
``[batch, max_blocks_per_seq]``; entries past a sequence's length are never read.

On CPU tensors the Triton kernels run in Triton's interpreter; launching them on CPU
tensors without it raises a clear error.
"""

from __future__ import annotations

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

__all__ = ["triton_available"]


def triton_available() -> bool:
    """True if triton is importable (the kernels can run: compiled on CUDA, else interpreted)."""
    return importlib.util.find_spec("triton") is not None
