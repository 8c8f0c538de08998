"""The placement simulator as a bench target: the same trace, step times from a profile.

The simulated instances batch as the engine's options say (block size, ``max_num_seqs``,
the prefill token budget ``max_num_batched_tokens``). KV pools: beside a real run, each
simulated instance gets exactly the blocks its real twin allocated (read from the engine
client's stats); alone, the profile's capacity for the instance's TP x PP. Step times
(and, when the profile has one, the runtime's per-step overhead) are the simulator's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from dsbox.bench.targets import SIMULATED, Progress
from dsbox.config import ModelSpec, Placement
from dsbox.metrics.records import RequestRecord
from dsbox.placement import ClusterSpec, EngineLimits, LatencyProfile, build_setup, simulate
from dsbox.placement.sim_types import SimSetup
from dsbox.workloads import Trace


def sim_setup(placement: str, spec: ModelSpec, profile: LatencyProfile, limits: EngineLimits,
              engine_fit: str | None = None,
              kv_blocks: Sequence[int] | None = None) -> SimSetup:
    """The simulator's view of ``placement`` on one node with as many devices as it uses;
    ``kv_blocks``: blocks per instance (in placement order) instead of the profile's."""
    parsed = Placement.parse(placement)
    width = 1 + max(d for inst in parsed.assigned().instances for d in inst.devices)
    cluster = ClusterSpec(1, width, profile=profile.device)
    setup = build_setup(parsed, spec, profile, cluster, limits, engine_fit)
    if kv_blocks is None:
        return setup
    if len(kv_blocks) != len(setup.instances):
        raise ValueError(f"{len(kv_blocks)} KV pool sizes for {len(setup.instances)} instances")
    instances = tuple(replace(inst, num_blocks=n)
                      for inst, n in zip(setup.instances, kv_blocks, strict=True))
    return replace(setup, instances=instances)


class SimTarget:
    """Replays traces in the simulator (no device, no weights)."""

    kind = SIMULATED

    def __init__(self, setup: SimSetup, placement: str, num_gpus: int) -> None:
        self.setup = setup
        self.placement = placement
        self.num_gpus = num_gpus

    @classmethod
    def build(cls, placement: str, spec: ModelSpec, profile: LatencyProfile,
              limits: EngineLimits, engine_fit: str | None = None,
              kv_blocks: Sequence[int] | None = None) -> SimTarget:
        setup = sim_setup(placement, spec, profile, limits, engine_fit, kv_blocks)
        return cls(setup, placement, Placement.parse(placement).num_devices)

    def run(self, trace: Trace, progress: Progress) -> list[RequestRecord]:
        result = simulate(self.setup, trace.without_prompts())
        records = result.records(trace)
        progress(len(records))
        return records

    def close(self) -> None:
        pass
