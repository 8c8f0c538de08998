"""PlanContext: everything one placement search shares (model, profile, cluster, SLO,
request sample, engine limits, the goodput search and its cache, and its progress)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dsbox.config.model_spec import ModelSpec
from dsbox.config.placement import InstanceSpec, Placement
from dsbox.config.slo import SLO
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.goodput import GoodputSearch, SearchSettings
from dsbox.placement.profile import LatencyProfile
from dsbox.placement.sim_setup import EngineLimits, build_setup, sim_instance
from dsbox.placement.sim_types import SimSetup
from dsbox.placement.workload import RequestSample


@dataclass(frozen=True, slots=True)
class ParallelConfig:
    """TP x PP of one instance."""

    tp: int
    pp: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def instance(self, role: str, replicas: int = 1) -> InstanceSpec:
        return InstanceSpec(role, self.tp, self.pp, replicas)


@dataclass(slots=True)
class SearchProgress:
    """Where a search stands: configurations tried, simulations run, the best placement
    simulated end to end so far (per-GPU goodput), and the stage being searched."""

    stage: str = ""
    tried: int = 0
    simulations: int = 0
    best_label: str = ""
    best_per_gpu: float = 0.0


@dataclass(slots=True)
class PlanContext:
    """Inputs of a placement search, and the goodput search they share."""

    spec: ModelSpec
    profile: LatencyProfile
    cluster: ClusterSpec
    slo: SLO
    sample: RequestSample
    settings: SearchSettings = field(default_factory=SearchSettings)
    limits: EngineLimits = field(default_factory=EngineLimits)
    engine: str | None = None
    search: GoodputSearch | None = None
    on_progress: Callable[[SearchProgress], None] | None = None
    progress: SearchProgress = field(default_factory=SearchProgress)
    _setups: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.search is None:
            self.search = GoodputSearch(self.sample, self.slo, self.settings)

    def tried(self, label: str, num_gpus: int, goodput: float | None,
              placement: bool = True) -> None:
        """Record one evaluated configuration (``placement``: simulated end to end, so it
        may be the best so far) and tell ``on_progress``."""
        p = self.progress
        p.tried += 1
        p.simulations = self.search.stats.num_simulations
        if placement and goodput is not None and goodput / num_gpus > p.best_per_gpu:
            p.best_per_gpu, p.best_label = goodput / num_gpus, label
        if self.on_progress is not None:
            self.on_progress(p)

    @property
    def device_memory(self) -> int:
        return self.cluster.memory_bytes or self.profile.device_memory_bytes

    def setup(self, placement: Placement) -> SimSetup:
        """The simulator setup of ``placement`` (cached by its text)."""
        key = placement.assigned().format()
        if key not in self._setups:
            self._setups[key] = build_setup(placement, self.spec, self.profile, self.cluster,
                                            self.limits, self.engine)
        return self._setups[key]

    def phase_setup(self, role: str, cfg: ParallelConfig) -> SimSetup:
        """A phase-only setup: one ``prefill`` or one ``decode`` instance alone."""
        inst = sim_instance(role, cfg.tp, cfg.pp, self.spec, self.profile, self.limits,
                            self.engine)
        return SimSetup((inst,), self.spec.kv_bytes_per_token(self.profile.dtype))

    def feasible(self, cfg: ParallelConfig) -> bool:
        """Divisibility, weights + the longest request's KV in memory, and a KV pool (from
        the profile) holding the longest request of the sample."""
        spec, profile = self.spec, self.profile
        try:
            profile.fit(cfg.tp, self.engine)
            Placement((cfg.instance("colocated"),)).validate_for(
                spec, self.device_memory, dtype=profile.dtype,
                min_kv_tokens=self.sample.max_total_tokens,
                memory_utilization=profile.memory_utilization)
        except ValueError:
            return False
        block = self.limits.block_size
        blocks = profile.kv_tokens(spec, cfg.tp, cfg.pp) // block
        return blocks * block >= self.sample.max_total_tokens

    def instance_configs(self, max_gpus: int, max_tp: int | None = None,
                         pp_multiple: int = 1) -> list[ParallelConfig]:
        """Feasible (tp, pp) with tp * pp <= ``max_gpus`` and tp <= ``max_tp`` (default: GPUs
        per node); ``pp_multiple``: the instance's PP is that times ``pp`` (Alg. 2's
        cross-node stages) and must divide the layers."""
        max_tp = max_tp or self.cluster.gpus_per_node
        out = []
        for tp in self.profile.tps(self.engine):
            if tp > max_tp or self.spec.num_heads % tp:
                continue
            for pp in divisors(self.spec.num_layers // pp_multiple):
                if tp * pp > max_gpus:
                    break
                if self.feasible(ParallelConfig(tp, pp * pp_multiple)):
                    out.append(ParallelConfig(tp, pp))
        return out


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
