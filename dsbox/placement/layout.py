"""Device layouts: where the instances of a plan go on a cluster of nodes x GPUs.

- :func:`first_fit`: instances in order, each on the first node with room for all its GPUs
  (an instance larger than a node takes whole consecutive nodes). Used by Alg. 1 (high node
  affinity: any instance may talk to any other) and the colocated baseline.
- :func:`pair_layouts`: Alg. 1's layouts of a unit of prefill and decode instances, those
  that keep KV inside nodes first (as segment units), then first-fit.
- :class:`SegmentUnit`: Alg. 2's unit (low node affinity). The model is cut into
  ``pp_cross`` node stages; node ``c`` of the unit holds stage ``c`` of every prefill and
  every decode instance of the unit (its *segment*), so KV moves over NVLink only. Within
  a node an instance may pipeline further (``pp`` within the node).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dsbox.config.placement import InstanceSpec, Placement
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.context import ParallelConfig, divisors


def first_fit(instances: Sequence[InstanceSpec], cluster: ClusterSpec) -> Placement:
    """Assign devices to single-replica ``instances``; ValueError if they do not fit."""
    m = cluster.gpus_per_node
    free = [list(range(n * m, (n + 1) * m)) for n in range(cluster.num_nodes)]
    out = []
    for inst in instances:
        need = inst.num_devices
        devices: list[int] | None = None
        if need <= m:
            for node in free:
                if len(node) >= need:
                    devices, node[:] = node[:need], node[need:]
                    break
        else:
            whole = -(-need // m)
            for start in range(cluster.num_nodes - whole + 1):
                if all(len(free[n]) == m for n in range(start, start + whole)):
                    devices = [d for n in range(start, start + whole) for d in free[n]][:need]
                    for n in range(start, start + whole):
                        free[n] = [d for d in free[n] if d not in devices]
                    break
        if devices is None:
            raise ValueError(f"{inst.format(False)} does not fit the remaining GPUs of "
                             f"{cluster.describe()}")
        out.append(InstanceSpec(inst.role, inst.tp, inst.pp, 1, tuple(devices)))
    return merge(out)


def merge(instances: Sequence[InstanceSpec]) -> Placement:
    """Group single instances of the same role and shape into replicas (order kept per
    group, groups in order of first appearance)."""
    groups: dict[tuple, list[InstanceSpec]] = {}
    for inst in instances:
        groups.setdefault((inst.role, inst.tp, inst.pp), []).append(inst)
    merged = []
    for (role, tp, pp), members in groups.items():
        devices = None
        if all(m.devices is not None for m in members):
            devices = tuple(d for m in members for d in m.devices)
        merged.append(InstanceSpec(role, tp, pp, len(members), devices))
    return Placement(tuple(merged))


@dataclass(frozen=True, slots=True)
class SegmentUnit:
    """Alg. 2 unit: ``n_prefill`` prefill and ``n_decode`` decode instances whose node
    stage ``c`` (of ``pp_cross``) all sit on the unit's node ``c``."""

    pp_cross: int
    prefill: ParallelConfig   # within one node: tp and pp per node stage
    n_prefill: int
    decode: ParallelConfig
    n_decode: int

    def __post_init__(self) -> None:
        if min(self.pp_cross, self.n_prefill, self.n_decode) < 1:
            raise ValueError("pp_cross, n_prefill and n_decode must be >= 1")

    @property
    def segment_gpus(self) -> int:
        """GPUs the unit uses on each of its nodes."""
        return self.n_prefill * self.prefill.gpus + self.n_decode * self.decode.gpus

    @property
    def num_gpus(self) -> int:
        return self.pp_cross * self.segment_gpus

    def instance_shapes(self) -> list[InstanceSpec]:
        p = InstanceSpec("prefill", self.prefill.tp, self.prefill.pp * self.pp_cross)
        d = InstanceSpec("decode", self.decode.tp, self.decode.pp * self.pp_cross)
        return [p] * self.n_prefill + [d] * self.n_decode

    def describe(self) -> str:
        return merge(self.instance_shapes()).format(with_devices=False)

    def instances(self, nodes: Sequence[int], offset: int, gpus_per_node: int
                  ) -> list[InstanceSpec]:
        """The unit's instances with devices: node stage ``c`` on ``nodes[c]``, at local
        GPUs ``offset .. offset + segment_gpus - 1`` of each."""
        if len(nodes) != self.pp_cross:
            raise ValueError(f"unit needs {self.pp_cross} nodes, got {len(nodes)}")
        if offset + self.segment_gpus > gpus_per_node:
            raise ValueError("segment does not fit the node")
        out = []
        local = offset
        for cfg, count, role in ((self.prefill, self.n_prefill, "prefill"),
                                 (self.decode, self.n_decode, "decode")):
            for _ in range(count):
                devices = [node * gpus_per_node + local + s * cfg.tp + r
                           for node in nodes for s in range(cfg.pp) for r in range(cfg.tp)]
                out.append(InstanceSpec(role, cfg.tp, cfg.pp * self.pp_cross, 1,
                                        tuple(devices)))
                local += cfg.gpus
        return out

    def units_per_cluster(self, cluster: ClusterSpec) -> int:
        return ((cluster.num_nodes // self.pp_cross)
                * (cluster.gpus_per_node // self.segment_gpus))

    def unit_placement(self, cluster: ClusterSpec) -> Placement:
        """One unit on nodes ``0 .. pp_cross - 1`` from local GPU 0."""
        return merge(self.instances(range(self.pp_cross), 0, cluster.gpus_per_node))

    def cluster_placement(self, cluster: ClusterSpec) -> Placement:
        """As many units as the cluster holds."""
        m = cluster.gpus_per_node
        out = []
        for group in range(cluster.num_nodes // self.pp_cross):
            nodes = range(group * self.pp_cross, (group + 1) * self.pp_cross)
            for slot in range(m // self.segment_gpus):
                out.extend(self.instances(nodes, slot * self.segment_gpus, m))
        return merge(out)


def pair_layouts(prefill: ParallelConfig, decode: ParallelConfig, n_prefill: int,
                 n_decode: int, cluster: ClusterSpec
                 ) -> list[tuple[Placement, SegmentUnit | None]]:
    """Layouts of ``n_prefill`` prefill and ``n_decode`` decode instances: as segment units
    (each node holds the same layers of every instance, so KV stays inside nodes) for every
    node split ``c`` dividing both PPs, then first-fit; each with its segment unit (None
    for first-fit). Layouts that do not fit are left out."""
    out: list[tuple[Placement, SegmentUnit | None]] = []
    for c in divisors(math.gcd(prefill.pp, decode.pp)):
        if c > cluster.num_nodes:
            break
        unit = SegmentUnit(c, ParallelConfig(prefill.tp, prefill.pp // c), n_prefill,
                           ParallelConfig(decode.tp, decode.pp // c), n_decode)
        if unit.segment_gpus <= cluster.gpus_per_node:
            out.append((unit.unit_placement(cluster), unit))
    try:
        out.append((first_fit([InstanceSpec("prefill", prefill.tp, prefill.pp)] * n_prefill
                              + [InstanceSpec("decode", decode.tp, decode.pp)] * n_decode,
                              cluster), None))
    except ValueError:
        pass
    return out
