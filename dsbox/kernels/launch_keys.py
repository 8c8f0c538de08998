"""How many compiled variants the Triton kernels need: counted on CUDA, predicted without.

Triton compiles a kernel once per *launch key*: the constexpr values, the argument dtypes,
the specialisation of the other arguments (an integer equal to 1 becomes a constant;
integers and pointers divisible by 16 are tagged so) and the launch options (num_warps,
...). A key seen for the first time compiles (0.3-1.7 s each on an H100), so an argument that
changes from step to step and is specialised compiles in the middle of decoding.

- :func:`compiled_variants`: per kernel, the variants compiled so far in this process
  (Triton's in-memory cache of compiled kernels; CUDA only).
- :class:`LaunchKeyRecorder`: records the key of every launch as Triton's own binder computes
  it for a CUDA target (sm_90 by default), under the interpreter too: a CPU run then tells
  how many variants the same launches compile on a GPU.
"""

from __future__ import annotations

import functools
import importlib
from collections import defaultdict
from typing import Any

from dsbox.kernels import KERNELS
from dsbox.kernels._common import is_interpreted

__all__ = ["LaunchKeyRecorder", "compiled_variants", "kernel_objects"]


def kernel_objects() -> dict[str, Any]:
    """Every ``@triton.jit`` kernel of dsbox, by short name (imports the kernel modules)."""
    out = {}
    for module_name, names in KERNELS.items():
        module = importlib.import_module(module_name)
        for name in names:
            out[name.strip("_")] = getattr(module, name)
    return out


def compiled_variants() -> dict[str, int]:
    """Compiled variants per kernel in this process, over every device (0 if interpreted)."""
    out = {}
    for name, kernel in kernel_objects().items():
        if is_interpreted(kernel):
            out[name] = 0
            continue
        caches = getattr(kernel, "device_caches", {})
        out[name] = sum(len(entry[0]) for entry in caches.values())
    return out


def _binder(kernel: Any, capability: int, warp_size: int):
    """Triton's argument binder of ``kernel`` for a CUDA target (no GPU needed)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    if is_interpreted(kernel):
        options = kernel.kwargs
        dns = options.get("do_not_specialize")
        dns_align = options.get("do_not_specialize_on_alignment")
    else:
        dns = kernel.do_not_specialize
        dns_align = kernel.do_not_specialize_on_alignment
    jit = JITFunction(kernel.fn, do_not_specialize=dns, do_not_specialize_on_alignment=dns_align)
    backend = make_backend(GPUTarget("cuda", capability, warp_size))
    return create_function_from_signature(jit.signature, jit.params, backend)


class LaunchKeyRecorder:
    """Context manager: inside it, every launch of a dsbox kernel records its launch key.

    ``keys[name]`` is the set of distinct keys of kernel ``name``, ``counts`` their number:
    the variants a GPU of compute capability ``capability`` compiles for those launches.
    Options that the interpreter drops (num_warps, num_stages) are not in the keys; the
    launchers derive them from dtype and head_dim only, which the keys already hold.
    """

    def __init__(self, capability: int = 90, warp_size: int = 32) -> None:
        self.capability = capability
        self.warp_size = warp_size
        self.keys: dict[str, set[str]] = defaultdict(set)
        self._hooks: list[tuple[Any, Any]] = []

    def __enter__(self) -> LaunchKeyRecorder:
        for name, kernel in kernel_objects().items():
            hook = functools.partial(self._record, name,
                                     _binder(kernel, self.capability, self.warp_size))
            kernel.add_pre_run_hook(hook)
            self._hooks.append((kernel, hook))
        return self

    def __exit__(self, *exc) -> None:
        for kernel, hook in self._hooks:
            kernel.pre_run_hooks.remove(hook)
        self._hooks.clear()

    def _record(self, name: str, binder, *args, **kwargs) -> None:
        _params, specialization, options = binder(*args, **kwargs)
        self.keys[name].add(f"{specialization}{sorted(options.items())}")

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(keys) for name, keys in self.keys.items()}
