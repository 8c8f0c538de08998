"""A small table of GPUs: memory, peak dense fp16 FLOP/s, memory bandwidth, GPU-to-GPU link.

The analytic latency model (:mod:`dsbox.placement.analytic`) derives a profile for any
model on any GPU of this table from these figures; the cluster's default link bandwidth
inside a node comes from here too. Figures are the vendors' datasheet peaks (dense fp16 /
bf16 tensor throughput, no sparsity; link bandwidth per GPU per direction): the model is
calibrated on measured A100 fits, so only the ratios between GPUs matter.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One GPU kind; ``name`` is its profile name (``h100``)."""

    name: str
    full_name: str
    memory_bytes: int
    peak_flops: float         # dense fp16/bf16 tensor FLOP/s
    memory_bandwidth: float   # bytes/s
    link_bandwidth: float     # GPU-to-GPU inside a node, bytes/s per GPU per direction
    link: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a GPU needs a name")
        for attr in ("memory_bytes", "peak_flops", "memory_bandwidth", "link_bandwidth"):
            if not getattr(self, attr) > 0:
                raise ValueError(f"GPU {self.name}: {attr} must be positive")

    def describe(self) -> str:
        return (f"{self.full_name}: {self.memory_bytes / GIB:.0f} GiB, "
                f"{self.memory_bandwidth / 1e12:.2f} TB/s, {self.peak_flops / 1e12:.0f} "
                f"TFLOP/s fp16, {self.link} {self.link_bandwidth / 1e9:.0f} GB/s per direction")


GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("a100-40g", "NVIDIA A100-SXM4-40GB", 40 * GIB, 312e12, 1.555e12, 300e9, "NVLink 3"),
    GpuSpec("a100-80g", "NVIDIA A100-SXM4-80GB", 80 * GIB, 312e12, 2.039e12, 300e9, "NVLink 3"),
    GpuSpec("h100", "NVIDIA H100 SXM5 80GB", 80 * GIB, 989e12, 3.35e12, 450e9, "NVLink 4"),
    GpuSpec("h100-pcie", "NVIDIA H100 PCIe 80GB", 80 * GIB, 756e12, 2.0e12, 64e9, "PCIe 5.0"),
    GpuSpec("h200", "NVIDIA H200 SXM 141GB", 141 * 10**9, 989e12, 4.8e12, 450e9, "NVLink 4"),
    GpuSpec("b200", "NVIDIA B200 180GB", 180 * 10**9, 2250e12, 8.0e12, 900e9, "NVLink 5"),
    GpuSpec("l40s", "NVIDIA L40S 48GB", 48 * GIB, 362e12, 0.864e12, 32e9, "PCIe 4.0"),
    GpuSpec("l4", "NVIDIA L4 24GB", 24 * GIB, 121e12, 0.3e12, 32e9, "PCIe 4.0"),
)


def gpu_names() -> list[str]:
    return [g.name for g in GPUS]


def find_gpu(name: str) -> GpuSpec | None:
    """The table's GPU called ``name`` (case-insensitive), or None."""
    key = name.strip().lower()
    return next((g for g in GPUS if g.name == key), None)


def get_gpu(name: str) -> GpuSpec:
    gpu = find_gpu(name)
    if gpu is None:
        raise ValueError(f"unknown GPU {name!r}; known: {', '.join(gpu_names())}")
    return gpu
