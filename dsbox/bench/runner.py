"""Run a bench: every placement, every rate, every target; then the goodput searches.

Placements run one after the other (one engine open at a time, so runs never share the
machine's devices). For each placement: its engine starts (a real run) or the endpoint is
used, the simulator is set up beside it (``simulate``) mirroring the engine's limits and
KV pools, each rate's trace replays on each target, and the per-GPU goodput of each
target is searched from that sweep (extra probe runs, fewer on real targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dsbox.bench.engine_target import EngineTarget
from dsbox.bench.goodput import GoodputResult, search_goodput
from dsbox.bench.placements import BenchPlacement
from dsbox.bench.results import BenchResult, BenchRun, run_label
from dsbox.bench.sim_target import SimTarget
from dsbox.bench.slo import SLO_SCALES
from dsbox.bench.step_speed import step_time_ratio
from dsbox.bench.targets import SIMULATED, Target
from dsbox.bench.workload import BenchWorkload
from dsbox.config import SLO, EngineConfig, ModelSpec
from dsbox.placement.profile import LatencyProfile
from dsbox.placement.sim_setup import EngineLimits

SIM_GOODPUT_PROBES = 12


class BenchProgress(Protocol):
    """What a front end is told while a bench runs (the CLI draws rich progress bars)."""

    def status(self, text: str) -> None: ...
    def start_run(self, label: str, total: int) -> None: ...
    def advance(self, done: int) -> None: ...
    def end_run(self, run: BenchRun | None, probe: bool = False) -> None: ...


class SilentProgress:
    def status(self, text: str) -> None:
        pass

    def start_run(self, label: str, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        pass

    def end_run(self, run: BenchRun | None, probe: bool = False) -> None:
        pass


@dataclass(slots=True)
class BenchPlan:
    """What to run. ``real``: the engine here; ``endpoint``: a server instead; ``simulate``:
    the simulator beside either, or alone when neither."""

    model: str                             # as given: a registry name or a checkpoint
    spec: ModelSpec
    placements: list[BenchPlacement]
    rates: tuple[float, ...]               # empty: a recorded trace as recorded
    slo: SLO
    engine_kwargs: dict = field(default_factory=dict)
    real: bool = True
    endpoint: str | None = None
    served_model: str | None = None
    simulate: bool = False
    profile: LatencyProfile | None = None
    profile_name: str | None = None
    engine_fit: str | None = None
    goodput_probes: int = 2                # per real / endpoint target
    sim_goodput_probes: int = SIM_GOODPUT_PROBES
    slo_scales: tuple[float, ...] = SLO_SCALES

    def __post_init__(self) -> None:
        if self.real and self.endpoint:
            raise ValueError("a bench runs the engine here or an endpoint, not both")
        if not (self.real or self.endpoint or self.simulate):
            raise ValueError("nothing to run: no engine, endpoint or simulation")
        if self.simulate and self.profile is None:
            raise ValueError("simulating needs a latency profile")
        if self.goodput_probes < 0 or self.sim_goodput_probes < 0:
            raise ValueError("goodput probes must be >= 0")
        if not self.placements:
            raise ValueError("no placement to run")


class BenchRunner:
    """Runs a :class:`BenchPlan`; ``load_workload(tokenizer, with_text)`` gives the
    workload (called once, with the engine's tokenizer when there is an engine, else None:
    the bundled one)."""

    def __init__(self, plan: BenchPlan,
                 load_workload: Callable[[object, bool], BenchWorkload],
                 progress: BenchProgress | None = None) -> None:
        self.plan = plan
        self._load = load_workload
        self.progress = progress or SilentProgress()
        self._workload: BenchWorkload | None = None
        self.config = EngineConfig(model=plan.model, **{
            k: v for k, v in plan.engine_kwargs.items() if k not in ("model", "placement")})
        self.result: BenchResult | None = None

    # --- the workload, loaded once -------------------------------------------------------
    def workload(self, tokenizer) -> BenchWorkload:
        if self._workload is None:
            self.progress.status("loading the workload ...")
            with_text = self.plan.real or bool(self.plan.endpoint)
            self._workload = self._load(tokenizer, with_text)
        return self._workload

    # --- targets -------------------------------------------------------------------------
    def _open_engine(self, placement: BenchPlacement) -> EngineTarget:
        from dataclasses import replace

        from dsbox.client import open_engine

        self.progress.status(f"starting the engine: {placement.text} ...")
        config = replace(self.config, placement=placement.text)
        client = open_engine(config, on_progress=lambda s: self.progress.status(
            f"starting the engine: {placement.text}: {s}"))
        return EngineTarget(client, placement.text)

    def _endpoint(self, placement: BenchPlacement):
        from dsbox.bench.endpoint_target import EndpointTarget

        self.progress.status(f"connecting to {self.plan.endpoint} ...")
        spec = self.plan.spec
        return EndpointTarget(self.plan.endpoint, model=self.plan.served_model,
                              placement=placement.text, num_gpus=placement.num_devices,
                              bos=spec.bos_token_id, vocab_size=spec.vocab_size)

    def _sim(self, placement: BenchPlacement, primary: Target | None) -> SimTarget:
        cfg = self.config
        limits = EngineLimits(block_size=cfg.block_size, max_num_seqs=cfg.max_num_seqs,
                              max_num_batched_tokens=cfg.max_num_batched_tokens)
        kv_blocks = None
        if isinstance(primary, EngineTarget):
            kv_blocks = [i.kv_blocks_total for i in primary.client.stats().instances]
        return SimTarget.build(placement.text, self.plan.spec, self.plan.profile, limits,
                               self.plan.engine_fit, kv_blocks)

    # --- runs ----------------------------------------------------------------------------
    def _replay(self, target: Target, rate: float | None, label: str,
                probe: bool = False) -> BenchRun:
        trace = self._workload.trace_at(rate)
        self.progress.start_run(label, len(trace))
        try:
            records = target.run(trace, self.progress.advance)
        except BaseException:
            self.progress.end_run(None)
            raise
        run = BenchRun(target.kind, target.placement, target.num_gpus, rate, records,
                       self.plan.slo, self._step_speed(target))
        if not probe:  # kept before it is shown: a Ctrl-C once it is on screen keeps it
            self.result.runs.append(run)
        self.progress.end_run(run, probe)
        return run

    def _step_speed(self, target: Target) -> float | None:
        """A real run's step times over the profile's (when there is a profile)."""
        if not isinstance(target, EngineTarget) or self.plan.profile is None:
            return None
        return step_time_ratio(target.last_steps, target.tp_of, self.plan.profile,
                               self.plan.engine_fit, target.last_pulls)

    def run(self) -> BenchResult:
        plan = self.plan
        self.result = result = BenchResult(
            plan.spec.name, "", plan.slo, 0, 0, plan.slo_scales, profile=plan.profile_name)
        try:
            for placement in plan.placements:
                self._run_placement(placement, result)
        finally:  # an interrupted bench keeps what it measured, described as a whole one
            self._describe_workload(result)
        return result

    def _describe_workload(self, result: BenchResult) -> None:
        workload = self._workload
        if workload is None:
            return
        result.workload = workload.name
        result.num_requests = (len(workload.recorded) if workload.recorded is not None
                               else workload.num_requests)
        result.seed = workload.seed
        if workload.num_left_out:
            result.notes.append(f"{workload.num_left_out} of the workload's requests are longer "
                                "than the model's context and were left out of the draw")

    def _run_placement(self, placement: BenchPlacement, result: BenchResult) -> None:
        plan = self.plan
        primary: Target | None = None
        try:
            if plan.real:
                primary = self._open_engine(placement)
                tokenizer = primary.client.tokenizer
            else:
                if plan.endpoint:
                    primary = self._endpoint(placement)
                tokenizer = None  # the workload's default: the bundled tokenizer
            self.workload(tokenizer)
            targets: list[Target] = [t for t in (primary,) if t is not None]
            if plan.simulate:
                targets.append(self._sim(placement, primary))
            for rate in plan.rates or (None,):
                for target in targets:
                    label = run_label(target.kind, target.placement, rate)
                    self._replay(target, rate, label)
            if plan.rates:
                for target in targets:
                    result.goodputs.append(self._goodput(target, result))
        finally:
            if primary is not None:
                primary.close()

    def _goodput(self, target: Target, result: BenchResult) -> GoodputResult:
        plan = self.plan
        sweep = [(r.rate, r.report.slo_attainment)
                 for r in result.runs_of(target.kind, target.placement)]
        probes = plan.sim_goodput_probes if target.kind == SIMULATED else plan.goodput_probes

        def attainment_at(rate: float) -> float:
            label = "goodput search · " + run_label(target.kind, target.placement, rate)
            return self._replay(target, rate, label, probe=True).report.slo_attainment

        goodput, upper, tried = search_goodput(sweep, attainment_at, plan.slo.attainment,
                                               probes)
        return GoodputResult(target.kind, target.placement, target.num_gpus,
                             plan.slo.attainment, goodput, upper, tried)
