"""Pick the option with the highest per-GPU goodput, simulating as little as possible.

Options are tried in order of their estimated per-GPU goodput. Each one's binary search
first probes the rate it would need to beat the best per-GPU goodput so far; if that
fails, the option is dropped after that one (usually early-stopped) simulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsbox.config.placement import Placement
from dsbox.placement.context import PlanContext
from dsbox.placement.plan_types import Candidate
from dsbox.placement.sim_types import SimSetup


@dataclass(frozen=True, slots=True)
class Option:
    """A configuration to evaluate: the placement that is simulated (or, for a phase-only
    run, a ready setup and its GPU count), and a label."""

    label: str
    placement: Placement | None = None
    payload: object = None
    setup: SimSetup | None = None
    gpus: int = 0

    def __post_init__(self) -> None:
        if (self.placement is None) == (self.setup is None):
            raise ValueError("an option needs a placement or a setup (not both)")
        if self.setup is not None and self.gpus < 1:
            raise ValueError("an option given as a setup needs its GPU count")

    @property
    def num_gpus(self) -> int:
        return self.placement.num_devices if self.placement is not None else self.gpus


@dataclass(slots=True)
class Best:
    option: Option | None
    goodput: float
    candidates: list[Candidate]

    @property
    def per_gpu(self) -> float:
        return self.goodput / self.option.num_gpus if self.option else 0.0


def pick_best(ctx: PlanContext, options: Sequence[Option]) -> Best:
    """The option of highest per-GPU goodput (ties: fewer GPUs, then first listed)."""
    search = ctx.search
    scored = []
    for i, opt in enumerate(options):
        setup = opt.setup or ctx.setup(opt.placement)
        scored.append((search.estimate(setup) / opt.num_gpus, i, opt, setup))
    scored.sort(key=lambda s: (-s[0], s[2].num_gpus, s[1]))
    best: Option | None = None
    best_goodput = 0.0
    best_per_gpu = 0.0
    candidates = []
    for estimate, _, opt, setup in scored:
        goodput = search.goodput(setup, must_beat=search.bar(best_per_gpu, opt.num_gpus))
        candidates.append(Candidate(opt.label, opt.num_gpus, goodput, estimate * opt.num_gpus))
        ctx.tried(opt.label, opt.num_gpus, goodput, placement=opt.placement is not None)
        if goodput is not None and goodput / opt.num_gpus > best_per_gpu:
            best, best_goodput, best_per_gpu = opt, goodput, goodput / opt.num_gpus
    return Best(best, best_goodput, candidates)
