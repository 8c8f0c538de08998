"""The simulator's inputs and output: instances, setup, trace, result.

A :class:`SimSetup` is what the simulator needs of a placement: per instance its role,
step-time model, KV blocks and batching limits, and the KV transfer bandwidth between each
prefill and each decode instance. :func:`dsbox.placement.sim_setup.build_setup` makes one
from a ``Placement``, a model, a profile and a cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dsbox.config.placement import ROLES
from dsbox.config.slo import SLO
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.report import slo_attainment
from dsbox.placement.latency import InstanceLatency
from dsbox.workloads.trace import Trace


@dataclass(frozen=True, slots=True)
class SimInstance:
    """One simulated instance."""

    role: str
    latency: InstanceLatency
    num_blocks: int
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError("max_num_batched_tokens and max_num_seqs must be >= 1")

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


@dataclass(frozen=True, slots=True)
class SimSetup:
    """Instances plus KV transfer bandwidth (bytes/s) ``bandwidth[p][d]`` from the p-th
    prefill instance to the d-th decode instance (in the order they appear), and the shared
    links such a transfer occupies, ``links[p][d]`` (ids; empty: links of its own, e.g.
    NVLink between the two instances' GPUs). Transfers that share a link take it one at a
    time (at its full bandwidth: the same throughput as sharing it fairly); without
    ``links`` no transfer shares anything.

    Only prefill or only decode instances make a *phase-only* setup (Alg. 1 sizes each
    phase alone): prefill-only releases the KV at the end of prefill and judges TTFT only;
    decode-only takes each request as prefilled at its arrival and judges TPOT only.
    """

    instances: tuple[SimInstance, ...]
    kv_bytes_per_token: int = 0
    bandwidth: tuple[tuple[float, ...], ...] = ()
    links: tuple[tuple[tuple[int, ...], ...], ...] = ()

    def __post_init__(self) -> None:
        roles = [i.role for i in self.instances]
        if not roles:
            raise ValueError("a simulation needs at least one instance")
        n_p, n_d = roles.count("prefill"), roles.count("decode")
        if "colocated" in roles and (n_p or n_d):
            raise ValueError("mix of colocated and prefill/decode instances")
        if n_p and n_d:
            if len(self.bandwidth) != n_p or any(len(row) != n_d for row in self.bandwidth):
                raise ValueError(f"bandwidth must be a {n_p} x {n_d} table")
            if any(not (bw > 0) for row in self.bandwidth for bw in row):
                raise ValueError("bandwidths must be positive (bytes/s)")
            if self.links and (len(self.links) != n_p
                               or any(len(row) != n_d for row in self.links)):
                raise ValueError(f"links must be a {n_p} x {n_d} table")
        elif self.bandwidth or self.links:
            raise ValueError("bandwidth and links are only for setups with prefill and "
                             "decode instances")

    def crosses_network(self) -> bool:
        """Whether some prefill -> decode transfer uses a shared (network) link."""
        return any(ids for row in self.links for ids in row)

    @property
    def mode(self) -> str:
        """``colocated``, ``disaggregated``, ``prefill-only`` or ``decode-only``."""
        roles = {i.role for i in self.instances}
        if roles == {"colocated"}:
            return "colocated"
        if roles == {"prefill", "decode"}:
            return "disaggregated"
        return "prefill-only" if roles == {"prefill"} else "decode-only"

    @property
    def num_instances(self) -> int:
        return len(self.instances)

    def min_kv_capacity(self) -> int:
        """Tokens of the smallest KV pool (a request longer than this cannot run)."""
        return min(i.kv_capacity_tokens for i in self.instances)


SimTrace = Trace  # the simulator reads the same trace type as a real run


@dataclass(slots=True)
class SimResult:
    """Lifecycle stamps of every request (simulated seconds), and the SLO verdict.

    ``stopped_early`` means the run stopped once the verdict was certain (the stamps of
    the requests still running then are partial). ``num_met``/``num_violated`` count the
    requests known to meet / miss the SLO given to the simulator.
    """

    lifecycles: list[Lifecycle]
    slo: SLO | None = None
    num_met: int = 0
    num_violated: int = 0
    stopped_early: bool = False
    end_time: float = 0.0
    num_steps: int = 0

    @property
    def passed(self) -> bool | None:
        """Whether the SLO attainment target was reached (None without an SLO)."""
        if self.slo is None:
            return None
        return self.num_met >= required_met(len(self.lifecycles), self.slo.attainment)

    def attainment(self, slo: SLO | None = None) -> float:
        """Share of requests that finished and met ``slo`` (default: the run's SLO)."""
        slo = slo or self.slo
        if slo is None:
            raise ValueError("no SLO given")
        return slo_attainment(self.records(), slo)

    def records(self, trace: Trace | None = None) -> list[RequestRecord]:
        """The requests as the metrics report reads them (a request still running when the
        run stopped has finish reason ``error``: it did not complete)."""
        out = []
        for i, lc in enumerate(self.lifecycles):
            done = lc.finish is not None and bool(lc.token_times)
            out.append(RequestRecord(i, trace.prompt_lens[i] if trace else 0,
                                     len(lc.token_times), "length" if done else "error", lc))
        return out


def required_met(num_requests: int, attainment: float) -> int:
    """Requests that must meet the SLO for ``attainment`` of ``num_requests``."""
    return math.ceil(attainment * num_requests - 1e-9)
