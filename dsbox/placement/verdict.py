"""The planner's answer: the better of disaggregated and colocated serving, by how much, why.

Both sides are searched on the same request sample and (unless the colocated baseline is
given another engine's fit) the same engine fit, so the comparison is like for like. The
winner is the higher per-GPU goodput; disaggregation must win by more than the search's
rate resolution, else colocated serving (one kind of instance, no KV transfer) is chosen.

*Why* is told from the two placements' own figures: the step times that set the
trade-off (a mean prompt's prefill and a decode step, against the TPOT target), and what
each side misses first just above its goodput (one simulation per side at the next rate
of the grid: the share of requests that miss TTFT and TPOT). A loose TPOT target against
a short decode step lets a colocated instance slot prefills between decode steps without
missing TPOT, and it keeps all its GPUs on both jobs; a TPOT target a prefill step would
blow makes colocated instances trade TTFT against TPOT, which disaggregation avoids.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.config.placement import Placement
from dsbox.placement.context import PlanContext
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.plan_types import PhasePlan
from dsbox.placement.simulator import simulate


@dataclass(frozen=True, slots=True)
class Misses:
    """Just above a placement's goodput: the share of requests missing each target."""

    rate: float
    ttft: float
    tpot: float

    def describe(self) -> str:
        if self.ttft <= 0 and self.tpot <= 0:
            return "nothing"
        parts = []
        if self.ttft > 0:
            parts.append(f"TTFT for {self.ttft:.0%}")
        if self.tpot > 0:
            parts.append(f"TPOT for {self.tpot:.0%}")
        return " and ".join(parts)

    @property
    def binding(self) -> str:
        return "TTFT" if self.ttft >= self.tpot else "TPOT"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Which mode wins, by how much and why."""

    mode: str                      # "disaggregated", "colocated" or "none"
    placement: Placement           # the whole machine's placement of the winner
    unit: Placement
    goodput_per_gpu: float
    other_unit: Placement
    other_goodput_per_gpu: float
    ratio: float | None            # winner / other (None: the other serves nothing)
    reason: str
    same_fit: bool = True

    @property
    def other_mode(self) -> str:
        return "colocated" if self.mode == "disaggregated" else "disaggregated"

    def headline(self) -> str:
        """``Best: disaggregated U at X req/s/GPU, 1.12x colocated V (Y); why: ...``."""
        if self.mode == "none":
            return f"Best: none: no placement meets the SLO at any rate; why: {self.reason}"
        versus = (f"{self.ratio:.2f}x" if self.ratio is not None else "vs")
        return (f"Best: {self.mode} {self.unit.format(False)} at {self.goodput_per_gpu:.3f} "
                f"req/s/GPU, {versus} {self.other_mode} {self.other_unit.format(False)} "
                f"({self.other_goodput_per_gpu:.3f}); why: {self.reason}")

    def to_json(self) -> dict:
        return {"mode": self.mode, "placement": self.placement.format(),
                "unit": self.unit.format(False), "goodput_per_gpu": self.goodput_per_gpu,
                "versus": self.other_unit.format(False),
                "versus_goodput_per_gpu": self.other_goodput_per_gpu, "ratio": self.ratio,
                "same_engine_fit": self.same_fit, "reason": self.reason,
                "headline": self.headline()}


def misses_above(ctx: PlanContext, plan: PhasePlan) -> Misses | None:
    """Simulate ``plan``'s unit one grid step above its goodput (the whole probe) and
    count the requests that miss each target; None when it serves nothing."""
    if plan.unit_goodput <= 0:
        return None
    search = ctx.search
    rate = plan.unit_goodput * (1 + search.settings.tolerance)
    n = min(len(ctx.sample), search.settings.requests_at(rate))
    result = simulate(ctx.setup(plan.unit), ctx.sample.at_rate(rate, n), ctx.slo)
    done = [lc for lc in result.lifecycles if lc.ttft is not None]
    slo = ctx.slo
    ttft = sum(lc.ttft > slo.ttft for lc in done) + (n - len(done))
    tpot = sum(lc.tpot is not None and lc.tpot > slo.tpot for lc in done)
    return Misses(rate, ttft / n, tpot / n)


def _step_facts(ctx: PlanContext, colocated: PhasePlan) -> tuple[float, float, str]:
    """Mean-prompt prefill and batch-1 decode step (ms, whole model) of the colocated
    unit's first instance, and its label."""
    inst = colocated.unit.instances[0]
    lat = InstanceLatency.from_profile(ctx.profile, inst.tp, 1, ctx.engine)
    sample = ctx.sample
    prefill = lat.prefill_time(sample.mean_prompt, sample.mean_prompt ** 2) * 1e3
    context = int(sample.mean_prompt + sample.mean_output / 2)
    decode = lat.decode_time(1, context) * 1e3
    return prefill, decode, inst.format(False)


def _pools(unit: Placement) -> tuple[int, int]:
    return (sum(i.num_devices for i in unit.of_role("prefill")),
            sum(i.num_devices for i in unit.of_role("decode")))


def decide(ctx: PlanContext, disaggregated: PhasePlan, colocated: PhasePlan,
           colocated_ctx: PlanContext | None = None) -> Verdict:
    """The verdict on two searched plans (``colocated_ctx``: the colocated side's context
    when it used another engine fit)."""
    colo_ctx = colocated_ctx or ctx
    same_fit = colo_ctx.engine == ctx.engine
    d, c = disaggregated.goodput_per_gpu, colocated.goodput_per_gpu
    tpot_ms = ctx.slo.tpot * 1e3
    prefill_ms, decode_ms, colo_label = _step_facts(colo_ctx, colocated)
    steps = (f"on {colo_label} a mean prompt's prefill ({ctx.sample.mean_prompt:.0f} tokens) "
             f"takes {prefill_ms:.0f} ms and a decode step {decode_ms:.0f} ms, against a "
             f"TPOT target of {tpot_ms:.0f} ms")
    fits = prefill_ms + decode_ms <= tpot_ms  # a prefill between two decode steps
    fit_note = "" if same_fit else (
        f" (colocated on the {colo_ctx.engine} engine fit, disaggregated on "
        f"{ctx.engine or ctx.profile.default_engine}: not a like-for-like comparison)")
    if d <= 0 and c <= 0:
        reason = (f"{steps} and a TTFT target of {ctx.slo.ttft * 1e3:.0f} ms; even at "
                  "the lowest rate too many requests miss them")
        return Verdict("none", colocated.placement, colocated.unit, 0.0, disaggregated.unit,
                       0.0, None, reason + fit_note, same_fit)
    d_miss = misses_above(ctx, disaggregated)
    c_miss = misses_above(colo_ctx, colocated)
    n_pre, n_dec = _pools(disaggregated.unit)
    if d > c * (1 + ctx.search.settings.tolerance):
        why = (f"{steps}: a prefill between two decode steps "
               f"{'uses most of' if fits else 'overruns'} it, so colocated instances trade "
               "TTFT against TPOT")
        if c_miss is not None:
            why += f" (just above its goodput colocated misses {c_miss.describe()})"
        why += (f"; disaggregation sizes the phases apart ({n_pre} GPUs on prefill, "
                f"{n_dec} on decode per unit)")
        return Verdict("disaggregated", disaggregated.placement, disaggregated.unit, d,
                       colocated.unit, c, d / c if c > 0 else None, why + fit_note, same_fit)
    if d > c:
        why = (f"disaggregated is ahead by less than the search's "
               f"{ctx.search.settings.tolerance:.0%} rate resolution; colocated is simpler "
               "(one kind of instance, no KV transfer)")
    else:
        why = (f"{steps}: "
               + ("a prefill between two decode steps still meets it, and "
                  if fits else "")
               + "a colocated instance puts all its GPUs on both phases")
        if d_miss is not None:
            pool = "prefill" if d_miss.binding == "TTFT" else "decode"
            why += (f", while disaggregated runs out of {pool} capacity first (just above "
                    f"its goodput it misses {d_miss.describe()}, with {n_pre} of "
                    f"{n_pre + n_dec} GPUs on prefill)")
    return Verdict("colocated", colocated.placement, colocated.unit, c, disaggregated.unit, d,
                   c / d if d > 0 else None, why + fit_note, same_fit)
