"""ClusterSpec: nodes x GPUs per node, the GPU kind (its profile), memory and bandwidths.

``ClusterSpec.parse("4x8")`` is four nodes of eight GPUs. Defaults follow DistServe's
testbed: A100-80GB GPUs with NVLink inside a node (600 GB/s bidirectional, so 300 GB/s
each way per GPU) and a 25 Gbps network between nodes. :meth:`ClusterSpec.for_profile`
takes the link inside a node from the GPU table when the profile names a GPU of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NVLINK_BYTES_PER_S = 300e9      # per GPU, one direction (A100 NVLink: 600 GB/s both ways)
NETWORK_BYTES_PER_S = 25e9 / 8  # per node (DistServe's testbed: 25 Gbps)
_CLUSTER_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A homogeneous GPU cluster."""

    num_nodes: int
    gpus_per_node: int
    profile: str = "a100-80g"
    memory_bytes: int | None = None  # per GPU; None: the profile's device memory
    nvlink_bandwidth: float = NVLINK_BYTES_PER_S
    network_bandwidth: float = NETWORK_BYTES_PER_S

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"cluster needs >= 1 node and >= 1 GPU per node, got "
                             f"{self.num_nodes}x{self.gpus_per_node}")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError("memory_bytes must be positive")
        if not (self.nvlink_bandwidth > 0 and self.network_bandwidth > 0):
            raise ValueError("bandwidths must be positive (bytes/s)")

    @classmethod
    def parse(cls, text: str, **kwargs) -> ClusterSpec:
        """``"NxG"``: N nodes of G GPUs each."""
        match = _CLUSTER_RE.match(text)
        if match is None:
            raise ValueError(f"cluster {text!r}: expected NODESxGPUS, e.g. 1x8 or 4x8")
        return cls(int(match[1]), int(match[2]), **kwargs)

    @classmethod
    def for_profile(cls, text: str, profile: str, nvlink_bandwidth: float | None = None,
                    network_bandwidth: float | None = None) -> ClusterSpec:
        """``"NxG"`` of the GPU ``profile`` names; the link inside a node defaults to that
        GPU's (:mod:`dsbox.placement.gpus`; NVLink 3 for anything else), the network
        between nodes to 25 Gbps."""
        from dsbox.placement.gpus import find_gpu

        gpu = find_gpu(str(profile))
        if nvlink_bandwidth is None:
            nvlink_bandwidth = gpu.link_bandwidth if gpu is not None else NVLINK_BYTES_PER_S
        return cls.parse(text, profile=str(profile), nvlink_bandwidth=nvlink_bandwidth,
                         network_bandwidth=network_bandwidth or NETWORK_BYTES_PER_S)

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def node_of(self, device: int) -> int:
        return device // self.gpus_per_node

    def describe(self) -> str:
        return f"{self.num_nodes}x{self.gpus_per_node} {self.profile}"
