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


_INTERPRETED: dict[Any, Any] = {}


def launchable(kernel: Any, device: torch.device) -> Any:
    """The kernel to launch on ``device``.

    Compiled Triton kernels cannot run on CPU tensors. When a module was imported without
    ``TRITON_INTERPRET=1`` (so ``@triton.jit`` built a compiled kernel) and the tensors are on
    the CPU, run the same Python function in Triton's interpreter instead.
    """
    if device.type == "cuda":
        return kernel
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(kernel, InterpretedFunction):
        return kernel
    if kernel not in _INTERPRETED:
        try:
            _INTERPRETED[kernel] = InterpretedFunction(kernel.fn)
        except Exception as exc:  # pragma: no cover - depends on triton internals
            raise RuntimeError(
                "Triton kernels on CPU tensors need the interpreter: set TRITON_INTERPRET=1 "
                "before importing dsbox.kernels.* modules"
            ) from exc
    return _INTERPRETED[kernel]


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
