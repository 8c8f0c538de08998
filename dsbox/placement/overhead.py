"""The serving runtime's own cost per step, measured on the running engine (``dsbox profile``).

The fits of a profile time the model alone. A served request pays more: scheduling, batch
building, the step's trip to the worker and back, the output's way to the client. To
measure that, the real engine is started through the engine client under a serving
placement and sent lone requests one at a time (a few prompt lengths x a few output
lengths, greedy, ``ignore_eos``), and their lifecycle stamps are compared with what the
fit predicts for the same steps:

- prefill: TTFT minus the fit's prefill of the prompt (one prefill step each);
- decode: TPOT minus the fit's mean decode step of one sequence over the request's
  contexts (``prompt + 1 .. prompt + output - 1``), one sample per request at its mean
  context. In a disaggregated placement this includes the KV handoff, amortised over the
  request's decode steps, as TPOT does.

Each kind is fitted as ``ms + ms_per_token * context`` by least squares on the relative
error of the whole step, with both terms clamped at 0 (the per-token term is kept only
where it lowers the error: a two-variable non-negative least squares). Prefill and decode
overheads differ (a prefill step's output crosses to the decode side, a decode step's does
not), so the profile keeps one of each
(:class:`~dsbox.placement.profile.StepOverhead`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dsbox.placement.profile import StepFit, StepOverhead


@dataclass(frozen=True, slots=True)
class OverheadProbe:
    """The lone requests sent, and the placement they are served under."""

    placement: str = "colocated:tp=1"
    prompt_lens: tuple[int, ...] = (32, 128, 256, 512)
    output_lens: tuple[int, ...] = (16, 48)
    repeats: int = 3
    warmup: int = 1

    def __post_init__(self) -> None:
        if not self.prompt_lens or not self.output_lens:
            raise ValueError("overhead probe: prompt_lens and output_lens must be non-empty")
        if min(self.prompt_lens) < 1 or min(self.output_lens) < 2:
            raise ValueError("overhead probe: prompts >= 1 token and outputs >= 2 tokens")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("overhead probe: repeats >= 1 and warmup >= 0 required")

    def requests(self, max_len: int) -> list[tuple[int, int]]:
        """``(prompt, output)`` of every request that fits ``max_len`` positions."""
        return [(p, o) for p in self.prompt_lens for o in self.output_lens if p + o <= max_len]


@dataclass(frozen=True, slots=True)
class LoneRequest:
    """One measured lone request: lengths, TTFT and TPOT (seconds)."""

    prompt: int
    output: int
    ttft: float
    tpot: float

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "output": self.output, "ttft": self.ttft,
                "tpot": self.tpot}


@dataclass(frozen=True, slots=True)
class OverheadRun:
    """The fitted overheads and what they were fitted on."""

    prefill: StepOverhead
    decode: StepOverhead
    requests: tuple[LoneRequest, ...]
    placement: str

    def provenance(self) -> dict:
        return {"placement": self.placement,
                "lone_requests": [r.to_dict() for r in self.requests]}


def fit_overhead(samples: Sequence[tuple[float, float, float]]) -> StepOverhead:
    """``ms + ms_per_token * x`` through ``(x, overhead ms, measured ms)`` samples, both
    terms >= 0, by least squares on the relative error of the whole step (model time plus
    overhead against the measured time), as the step fits are; with two unknowns the
    constrained optimum is the free one when feasible, else the better one-term fit."""
    if not samples:
        raise ValueError("no overhead samples")
    xs = [float(x) for x, _, _ in samples]
    ys = [float(y) for _, y, _ in samples]
    ws = [1.0 / max(float(m), 1e-9) ** 2 for _, _, m in samples]

    def wsum(f) -> float:
        return sum(w * f(x, y) for x, y, w in zip(xs, ys, ws, strict=True))

    def sse(a: float, b: float) -> float:
        return wsum(lambda x, y: (a + b * x - y) ** 2)

    sw, swx, swy = wsum(lambda x, y: 1.0), wsum(lambda x, y: x), wsum(lambda x, y: y)
    swxx, swxy = wsum(lambda x, y: x * x), wsum(lambda x, y: x * y)
    candidates = [(max(0.0, swy / sw), 0.0)]
    if swxx > 0:
        candidates.append((0.0, max(0.0, swxy / swxx)))
    det = sw * swxx - swx * swx
    if det > 1e-12 * sw * swxx:
        b = (sw * swxy - swx * swy) / det
        a = (swy - b * swx) / sw
        if a >= 0 and b >= 0:
            candidates.append((a, b))
    a, b = min(candidates, key=lambda ab: sse(*ab))
    return StepOverhead(a, b)


def overhead_samples(fit: StepFit, requests: Sequence[LoneRequest]
                     ) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]]]:
    """(prefill, decode) ``(context, measured - predicted ms, measured ms)`` samples."""
    prefill, decode = [], []
    for r in requests:
        prefill.append((r.prompt, r.ttft * 1e3 - fit.prefill_ms([r.prompt]), r.ttft * 1e3))
        contexts = range(r.prompt + 1, r.prompt + r.output)
        model = statistics.fmean(fit.decode_ms(1, c) for c in contexts)
        decode.append((statistics.fmean(contexts), r.tpot * 1e3 - model, r.tpot * 1e3))
    return prefill, decode


def send_lone_requests(client, probe: OverheadProbe,
                       progress: Callable[[int, int, str], None] | None = None
                       ) -> list[LoneRequest]:
    """Send ``probe``'s requests to ``client`` one at a time (after ``warmup`` unmeasured
    rounds); each shape keeps its fastest TTFT and TPOT over ``repeats`` (the least
    disturbed by whatever else the machine runs, as the grid's step times)."""
    from dsbox.engine.core.sampling_params import SamplingParams

    shapes = probe.requests(client.max_model_len)
    if not shapes:
        raise ValueError("no overhead probe request fits the model's length limit")
    vocab = client.spec.vocab_size
    rounds = probe.warmup + probe.repeats
    total = rounds * len(shapes)
    seen: dict[tuple[int, int], list[tuple[float, float]]] = {s: [] for s in shapes}
    done = 0
    for r in range(rounds):
        for prompt, output in shapes:
            ids = [(31 * k + 11) % vocab for k in range(prompt)]
            params = SamplingParams(max_tokens=output, temperature=0.0, ignore_eos=True)
            (out,) = client.generate([ids], params, tag="profile-overhead", timeout=300)
            if out.error is not None or len(out.token_ids) != output:
                raise ValueError(f"overhead probe request failed: {out.error or out.token_ids}")
            if r >= probe.warmup:
                seen[(prompt, output)].append((out.lifecycle.ttft, out.lifecycle.tpot))
            done += 1
            if progress is not None:
                progress(done, total, f"lone request: prompt {prompt}, output {output}")
    return [LoneRequest(p, o, min(t for t, _ in runs), min(t for _, t in runs))
            for (p, o), runs in seen.items()]


def measure_overhead(client, fit: StepFit, probe: OverheadProbe,
                     progress: Callable[[int, int, str], None] | None = None) -> OverheadRun:
    """Lone requests on ``client`` (an engine under ``probe.placement``) against ``fit``."""
    requests = send_lone_requests(client, probe, progress)
    prefill, decode = overhead_samples(fit, requests)
    return OverheadRun(fit_overhead(prefill), fit_overhead(decode), tuple(requests),
                       probe.placement)


def default_placement(num_devices: int) -> str:
    """Disaggregated on two devices (cores on a CPU) where there are two, else colocated."""
    return "prefill:tp=1;decode:tp=1" if num_devices >= 2 else "colocated:tp=1"


def measure_engine_overhead(config, fit: StepFit, probe: OverheadProbe,
                            progress: Callable[[int, int, str], None] | None = None,
                            on_status: Callable[[str], None] | None = None) -> OverheadRun:
    """Start the engine of ``config`` under ``probe.placement`` (through the engine client),
    measure its per-step overheads against ``fit``, and stop it."""
    from dataclasses import replace

    from dsbox.client import open_engine

    config = replace(config, placement=probe.placement)
    with open_engine(config, on_progress=on_status) as client:
        return measure_overhead(client, fit, probe, progress)
