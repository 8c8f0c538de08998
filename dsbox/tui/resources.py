"""What the machine's devices are doing: per-GPU utilisation and memory through NVML (the
``nvidia-ml-py`` package), else the CPU: load averages and per-core busy share from
``/proc/stat`` (differences between two reads).

``ResourceMonitor.sample()`` is cheap (a few NVML calls or one small file read) and is
called by the dashboard's poll, off the UI thread. No textual import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROC_STAT = "/proc/stat"


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    name: str
    utilization: float          # share of time a kernel ran over NVML's last period, 0..1
    memory_used: int            # bytes
    memory_total: int           # bytes

    @property
    def memory_usage(self) -> float:
        return self.memory_used / self.memory_total if self.memory_total else 0.0


@dataclass(frozen=True, slots=True)
class CpuSample:
    load_avg: tuple[float, float, float]   # 1, 5, 15 minutes (runnable processes)
    core_busy: tuple[float, ...]           # per core, 0..1, since the previous sample
    num_cores: int


@dataclass(frozen=True, slots=True)
class ResourceSample:
    gpus: tuple[GpuSample, ...]
    cpu: CpuSample


class ResourceMonitor:
    """Samples GPUs through NVML when there are any, and the CPU always."""

    def __init__(self, use_gpus: bool = True) -> None:
        self._nvml = None
        self._handles: list = []
        self._names: list[str] = []
        self._last_cpu: dict[str, tuple[int, int]] = {}
        if use_gpus:
            self._open_nvml()
        self.sample()  # the first CPU read is a baseline

    def _open_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no package, no driver: a CPU machine
            return
        try:
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(pynvml.nvmlDeviceGetCount())]
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                keep = [int(x) for x in visible.split(",") if x.strip().isdigit()]
                handles = [handles[i] for i in keep if i < len(handles)]
            names = [pynvml.nvmlDeviceGetName(h) for h in handles]
        except Exception:
            pynvml.nvmlShutdown()
            return
        self._nvml = pynvml
        self._handles = handles
        self._names = [n.decode() if isinstance(n, bytes) else n for n in names]

    @property
    def has_gpus(self) -> bool:
        return bool(self._handles)

    def sample(self) -> ResourceSample:
        return ResourceSample(self._gpus(), self._cpu())

    def _gpus(self) -> tuple[GpuSample, ...]:
        out = []
        for i, (h, name) in enumerate(zip(self._handles, self._names, strict=True)):
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0
                mem = self._nvml.nvmlDeviceGetMemoryInfo(h)
                out.append(GpuSample(i, name, util, int(mem.used), int(mem.total)))
            except Exception:  # a GPU fell off the bus: show what is left
                continue
        return tuple(out)

    def _cpu(self) -> CpuSample:
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        times = _read_proc_stat()
        busy = []
        for core, (total, idle) in sorted(times.items(), key=lambda kv: int(kv[0][3:])):
            prev = self._last_cpu.get(core)
            if prev is not None and total > prev[0]:
                busy.append(1.0 - (idle - prev[1]) / (total - prev[0]))
            else:
                busy.append(0.0)
        self._last_cpu = times
        return CpuSample(tuple(load), tuple(busy), len(times) or (os.cpu_count() or 1))

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
            self._handles = []


def _read_proc_stat() -> dict[str, tuple[int, int]]:
    """``cpuN -> (total jiffies, idle + iowait jiffies)``; {} where there is no /proc."""
    out = {}
    try:
        with open(PROC_STAT) as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *fields = line.split()
                    values = [int(v) for v in fields[:8]]
                    out[name] = (sum(values), values[3] + values[4])
    except OSError:
        pass
    return out
