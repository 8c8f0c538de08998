"""Paged-attention kernels (Triton), each with a torch reference beside it.

One kernel per module:

- :mod:`dsbox.kernels.kv_write`: ``write_kv`` scatters new tokens' K/V into paged slots.
- :mod:`dsbox.kernels.prefill_attention`: ``prefill_attention``, causal varlen attention
  over the paged cache (fresh prompts and prompts continuing on cached context).
- :mod:`dsbox.kernels.decode_attention`: ``decode_attention``, split-KV (flash-decoding)
  attention of one new token per sequence over the paged cache.
- :mod:`dsbox.kernels.kv_copy`: ``copy_blocks`` copies KV blocks between two pools on one
  device (the KV handoff from a prefill to a decode worker).
- :mod:`dsbox.kernels.launch_keys`: how many compiled variants the kernels need (Triton's
  cache on CUDA; Triton's own specialisation rules without a GPU).

This package imports neither triton nor the kernel modules, so ``import dsbox.kernels`` is
cheap. On a machine without CUDA it turns Triton's interpreter on (``TRITON_INTERPRET=1``,
unless already set) before any kernel module can import triton: there the kernels can only
run interpreted. On a machine with CUDA it never sets the variable (CUDA workers started from
this process would inherit it). The kernel modules import triton only if it is installed: the
torch references (``*_ref``), which are the engine's CPU attention path, work without it.

Interpreted or compiled is decided once per process, when a kernel module is imported
(``@triton.jit`` reads ``TRITON_INTERPRET`` then). :func:`ensure_mode` fixes it for a device:
a CUDA worker calls ``ensure_mode("cuda")`` first thing. Launching an interpreted kernel on
CUDA tensors, or a compiled one on CPU tensors, raises a clear error.

Paged KV cache layout (per layer): ``k_cache`` and ``v_cache`` of shape
``[num_blocks, block_size, num_heads, head_dim]``; they may be strided views into a larger
pool, only the last dim must be contiguous. Block tables are int32
``[batch, max_blocks_per_seq]``; entries past a sequence's length are never read.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator

import torch

from dsbox.kernels._common import INTERPRET_ENV, interpreting, is_interpreted

#: Whether the interpreter was asked for before dsbox turned it on (a user's or a test's
#: explicit TRITON_INTERPRET=1): the engine runs the Triton backend on the CPU only then.
INTERPRETER_REQUESTED = os.environ.get(INTERPRET_ENV) == "1"

if not torch.cuda.is_available():
    os.environ.setdefault(INTERPRET_ENV, "1")

__all__ = ["INTERPRETER_REQUESTED", "KERNELS", "ensure_mode", "kernel_mode", "load_kernels",
           "triton_available",
           "without_interpreter_env"]

# kernel module -> its @triton.jit functions
KERNELS = {
    "dsbox.kernels.kv_write": ("_write_kv_kernel",),
    "dsbox.kernels.prefill_attention": ("_prefill_attention_kernel",),
    "dsbox.kernels.decode_attention": ("_decode_split_kernel", "_decode_merge_kernel"),
    "dsbox.kernels.kv_copy": ("_copy_blocks_kernel",),
}


def triton_available() -> bool:
    """True if triton is importable (the kernels can run: compiled on CUDA, else interpreted)."""
    return importlib.util.find_spec("triton") is not None


def kernel_mode() -> str | None:
    """How the kernel modules imported so far run: ``"compiled"``, ``"interpreted"``,
    ``"mixed"``; ``None`` if none is imported yet (or triton is missing)."""
    modes = set()
    for module_name, names in KERNELS.items():
        module = sys.modules.get(module_name)
        if module is None or getattr(module, "triton", None) is None:
            continue
        modes.update("interpreted" if is_interpreted(getattr(module, n)) else "compiled"
                     for n in names)
    if not modes:
        return None
    return modes.pop() if len(modes) == 1 else "mixed"


def ensure_mode(device: torch.device | str) -> str:
    """Make this process's kernels run on ``device``; returns ``"compiled"`` (CUDA) or
    ``"interpreted"`` (CPU). Call it before anything imports a kernel module.

    CUDA: removes ``TRITON_INTERPRET`` from this process's environment (so neither the
    kernels nor any process started from here run interpreted). CPU: the interpreter must be
    on; it is turned on only where there is no CUDA (a CUDA machine's workers would inherit
    it). Raises ``RuntimeError`` when kernel modules were already imported in the other mode.
    """
    device = torch.device(device)
    want = "compiled" if device.type == "cuda" else "interpreted"
    if want == "compiled":
        os.environ.pop(INTERPRET_ENV, None)
    elif not interpreting():
        if torch.cuda.is_available():
            raise RuntimeError(
                "Triton kernels on CPU tensors need TRITON_INTERPRET=1 from process start; on "
                "a machine with CUDA dsbox does not set it (CUDA workers would inherit it): "
                "use attention_backend='torch' on the CPU, or run the process with "
                "TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=''")
        os.environ[INTERPRET_ENV] = "1"
    mode = kernel_mode()
    if mode is not None and mode != want:
        raise RuntimeError(
            f"dsbox's Triton kernels were already imported {mode} in this process (pid "
            f"{os.getpid()}), and {device} needs them {want}: the mode is fixed at import "
            f"({INTERPRET_ENV}={os.environ.get(INTERPRET_ENV, '<unset>')} now); call "
            "dsbox.kernels.ensure_mode first thing in the process")
    return want


def load_kernels(device: torch.device | str) -> str:
    """:func:`ensure_mode` for ``device``, then import every kernel module (so a worker's
    mode is settled, and checked, at start-up). Returns the mode."""
    mode = ensure_mode(device)
    if triton_available():
        for module_name in KERNELS:
            importlib.import_module(module_name)
        got = kernel_mode()
        if got != mode:
            raise RuntimeError(f"dsbox's kernels imported {got}, wanted {mode}")
    return mode


@contextlib.contextmanager
def without_interpreter_env() -> Iterator[None]:
    """``TRITON_INTERPRET`` removed from ``os.environ`` inside the block, restored after:
    start CUDA worker processes (and the forkserver that forks them) inside it."""
    saved = os.environ.pop(INTERPRET_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[INTERPRET_ENV] = saved
