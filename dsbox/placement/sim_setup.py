"""Build a :class:`SimSetup` from a ``Placement`` on a cluster with a latency profile.

Per instance: the profile's fit at its TP, its KV capacity at (TP, PP) in blocks, the
prefill token budget L_m at its TP. KV transfer between a prefill and a decode instance:
over NVLink (times the number of GPU pairs that can copy in parallel) when every layer of
the two sits on the same node; else the layers whose KV changes node go over the network
(``network_bandwidth`` per node), and the transfer occupies the network links of the nodes
it leaves and enters, which every transfer crossing those nodes shares.
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


def transfer_route(p: InstanceSpec, d: InstanceSpec, spec: ModelSpec,
                   cluster: ClusterSpec) -> tuple[float, tuple[int, ...]]:
    """Bytes/s of a KV copy from prefill instance ``p`` to decode instance ``d`` (one
    replica each, devices assigned) and the shared network links it occupies (link
    ``2n``: node ``n``'s way out, ``2n + 1``: its way in)."""
    m = cluster.gpus_per_node
    src = layer_nodes(p, 0, spec.num_layers, m)
    dst = layer_nodes(d, 0, spec.num_layers, m)
    crossing = [(a, b) for a, b in zip(src, dst, strict=True) if a != b]
    if not crossing:
        return cluster.nvlink_bandwidth * min(p.tp * p.pp, d.tp * d.pp), ()
    links = sorted({2 * n for a, _ in crossing for n in a}
                   | {2 * n + 1 for _, b in crossing for n in b})
    share = len(crossing) / spec.num_layers  # of the KV bytes that go over the network
    return cluster.network_bandwidth / share, tuple(links)


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
    routes = [[transfer_route(p, d, spec, cluster) for d in decodes] for p in prefills]
    bandwidth = tuple(tuple(bw for bw, _ in row) for row in routes)
    links = tuple(tuple(ids for _, ids in row) for row in routes)
    if not any(ids for row in links for ids in row):
        links = ()
    return SimSetup(instances, spec.kv_bytes_per_token(profile.dtype), bandwidth, links)
