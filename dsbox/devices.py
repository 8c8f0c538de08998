"""The devices of this machine: GPUs through NVML (the ``nvidia-ml-py`` package), else the
CPU cores. Used to choose a placement (``--placement auto``) and shown by the dashboard.

Reading NVML creates no CUDA context, so the engine's process stays free of one until its
worker processes (which own the GPUs) start.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# (parts of an NVML name, the planner's GPU table key), most specific first
_GPU_KEYS = ((("h200",), "h200"), (("h100", "pcie"), "h100-pcie"), (("h100",), "h100"),
             (("a100", "40gb"), "a100-40g"), (("a100",), "a100-80g"), (("b200",), "b200"),
             (("l40s",), "l40s"), (("l4",), "l4"))


@dataclass(frozen=True, slots=True)
class Devices:
    """What a placement can use: ``count`` GPUs of one kind, or ``count`` CPU cores."""

    kind: str                  # "cuda" or "cpu"
    count: int
    name: str                  # "NVIDIA H100 80GB HBM3", or "cpu"
    memory_bytes: int          # per GPU; RAM on the CPU

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def profile_key(self) -> str:
        """The device name latency profiles are filed under: the planner's GPU table key
        (``h100``, ``a100-80g``...) when this GPU is one of them, else its name as a slug
        (as ``dsbox profile`` files a measured profile), ``cpu`` without a GPU."""
        if not self.is_gpu:
            return "cpu"
        name = self.name.lower()
        for needle, key in _GPU_KEYS:
            if all(part in name for part in needle):
                return key
        return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"

    def describe(self) -> str:
        if self.is_gpu:
            return f"{self.count} x {self.name} ({self.memory_bytes / 2**30:.0f} GiB)"
        return f"CPU, {self.count} cores, {self.memory_bytes / 2**30:.0f} GiB RAM"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def discover_devices(device: str = "auto") -> Devices:
    """The GPUs NVML sees (``device`` "auto" or "cuda..."), else the CPU cores."""
    if device != "cpu":
        gpus = _nvml_gpus()
        if gpus:
            name, memory = gpus[0]
            return Devices("cuda", len(gpus), name, memory)
    return Devices("cpu", cpu_cores(), "cpu", _ram_bytes())


def _nvml_gpus() -> list[tuple[str, int]]:
    """(name, total memory) of each GPU visible to this process; [] without NVML."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: a CPU machine
        return []
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            keep = [int(x) for x in visible.split(",") if x.strip().isdigit()]
            handles = [handles[i] for i in keep if i < len(handles)]
        out = []
        for h in handles:
            name = pynvml.nvmlDeviceGetName(h)
            out.append((name.decode() if isinstance(name, bytes) else name,
                        int(pynvml.nvmlDeviceGetMemoryInfo(h).total)))
        return out
    finally:
        pynvml.nvmlShutdown()
