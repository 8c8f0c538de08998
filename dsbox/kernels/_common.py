"""Helpers shared by the kernel launchers (private)."""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634
INTERPRET_ENV = "TRITON_INTERPRET"


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def interpreting() -> bool:
    """True if the environment asks for Triton's interpreter (read when a kernel module is
    imported: ``@triton.jit`` decides then, once)."""
    return os.environ.get(INTERPRET_ENV, "0").lower() in ("1", "true", "on", "yes")


def is_interpreted(kernel: Any) -> bool:
    """True if ``kernel`` was decorated while the interpreter was on."""
    return type(kernel).__name__ == "InterpretedFunction"


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def launchable(kernel: Any, device: torch.device) -> Any:
    """The kernel to launch on ``device``, or a clear error when it cannot run there.

    The mode is fixed when the kernel module is imported: interpreted if ``TRITON_INTERPRET``
    was set then, compiled otherwise. Interpreted kernels run only on CPU tensors (on CUDA
    tensors the interpreter would copy every argument, the whole KV pool included, to the
    host and back on each launch: in effect a hang); compiled ones only on CUDA tensors.
    """
    interpreted = is_interpreted(kernel)
    if device.type == "cuda" and interpreted:
        raise RuntimeError(
            "Triton kernel launched on CUDA tensors in Triton's interpreter: TRITON_INTERPRET "
            "was set when dsbox's kernel modules were imported in this process (pid "
            f"{os.getpid()}), so every launch would copy the whole KV pool to the host. Unset "
            "TRITON_INTERPRET before the process starts, or call "
            "dsbox.kernels.ensure_mode('cuda') before anything imports the kernels")
    if device.type != "cuda" and not interpreted:
        raise RuntimeError(
            "Triton kernels on CPU tensors need the interpreter, and the kernels were imported "
            "without it (another package, e.g. transformers, may have imported them first, or "
            "the process has CUDA): set TRITON_INTERPRET=1 in the environment, or import "
            "dsbox.kernels before anything that imports triton")
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
