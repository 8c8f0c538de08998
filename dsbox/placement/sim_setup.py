"""Build a :class:`SimSetup` from a ``Placement`` on a cluster with a latency profile.

Per instance: the profile's fit at its TP, its KV capacity at (TP, PP) in blocks, the
prefill token budget L_m at its TP. KV transfer bandwidth between a prefill and a decode
instance: NVLink times the number of GPU pairs that can copy in parallel when every layer
of the two sits on the same node, else the cross-node network.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.config.model_spec import ModelSpec
from dsbox.config.placement import InstanceSpec, Placement, layer_nodes
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import LatencyProfile
from dsbox.placement.sim_types import SimInstance, SimSetup


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Batching limits of simulated instances (None: the profile's L_m at the TP)."""

    block_size: int = 16                        # KV block size, tokens
    max_num_seqs: int = 256                     # decode batch cap per instance
    max_num_batched_tokens: int | None = None   # prefill token budget (default: L_m)

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.max_num_seqs < 1:
            raise ValueError("block_size and max_num_seqs must be >= 1")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")


def sim_instance(role: str, tp: int, pp: int, spec: ModelSpec, profile: LatencyProfile,
                 limits: EngineLimits, engine: str | None = None) -> SimInstance:
    budget = limits.max_num_batched_tokens or profile.token_budget(tp, engine)
    blocks = profile.kv_tokens(spec, tp, pp) // limits.block_size
    if blocks < 1:
        raise ValueError(f"{spec.name} tp={tp} pp={pp}: no room for KV on {profile.device}")
    return SimInstance(role, InstanceLatency.from_profile(profile, tp, pp, engine), blocks,
                       limits.block_size, budget, limits.max_num_seqs)


def _aligned(p: InstanceSpec, d: InstanceSpec, num_layers: int, gpus_per_node: int) -> bool:
    return (layer_nodes(p, 0, num_layers, gpus_per_node)
            == layer_nodes(d, 0, num_layers, gpus_per_node))


def transfer_bandwidth(p: InstanceSpec, d: InstanceSpec, spec: ModelSpec,
                       cluster: ClusterSpec) -> float:
    """Bytes/s of a KV copy from prefill instance ``p`` to decode instance ``d`` (one
    replica each, devices assigned)."""
    if _aligned(p, d, spec.num_layers, cluster.gpus_per_node):
        return cluster.nvlink_bandwidth * min(p.tp * p.pp, d.tp * d.pp)
    return cluster.network_bandwidth


def build_setup(placement: Placement, spec: ModelSpec, profile: LatencyProfile,
                cluster: ClusterSpec, limits: EngineLimits | None = None,
                engine: str | None = None) -> SimSetup:
    """The simulator's view of ``placement`` (devices assigned in order if not given)."""
    limits = limits or EngineLimits()
    singles = placement.expanded()
    instances = tuple(sim_instance(i.role, i.tp, i.pp, spec, profile, limits, engine)
                      for i in singles)
    prefills = [i for i in singles if i.role == "prefill"]
    decodes = [i for i in singles if i.role == "decode"]
    bandwidth = tuple(tuple(transfer_bandwidth(p, d, spec, cluster) for d in decodes)
                      for p in prefills)
    return SimSetup(instances, spec.kv_bytes_per_token(profile.dtype), bandwidth)
