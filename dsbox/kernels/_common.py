"""Helpers shared by the kernel launchers (private)."""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def launchable(kernel: Any, device: torch.device) -> Any:
    """The kernel to launch on ``device``: Triton kernels run on CPU tensors only in the
    interpreter, which must have been on when triton was imported."""
    if device.type != "cuda":
        import triton.language as tl

        if not interpreting() or type(tl.zeros).__name__ != "InterpretedFunction":
            raise RuntimeError(
                "Triton kernels on CPU tensors need the interpreter, and triton was imported "
                "without it (another package, e.g. transformers, may have imported it first): "
                "set TRITON_INTERPRET=1 in the environment, or import dsbox.kernels before "
                "anything that imports triton")
    return kernel


def check_cache(name: str, cache: torch.Tensor) -> None:
    if cache.dim() != 4:
        raise ValueError(f"{name} must be [num_blocks, block_size, num_heads, head_dim]")
    if cache.stride(3) != 1:
        raise ValueError(f"{name}'s last dim must be contiguous")


def check_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}: unsupported dtype {t.dtype}")


def log2_scale(scale: float) -> float:
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return scale * LOG2E
