"""The serving runtime's own cost per step, measured on the running engine (``dsbox profile``).

The fits of a profile time the model alone. A served request pays more: scheduling, batch
building, the step's trip to the worker and back, the sampled tokens' way back through the
request tracker and out to the client. To measure that, the real engine is started through
the engine client under a serving placement and sent two kinds of load:

- lone requests one at a time (a few prompt lengths x a few output lengths, greedy,
  ``ignore_eos``), whose lifecycle stamps are compared with what the fit predicts for the
  same steps:

  - prefill: TTFT minus the fit's prefill of the prompt (one prefill step each);
  - decode: TPOT minus the fit's mean decode step of one sequence over the request's
    contexts (``prompt + 1 .. prompt + output - 1``), one sample per request at its mean
    context. In a disaggregated placement this includes the KV handoff, amortised over
    the request's decode steps, as TPOT does;

- bursts of requests sent at once (each burst's prompts of one length, the shortest in
  the first burst and the longest in the last, so that a cost per sequence can be told
  from a cost per token of context; output lengths spread so that the decode batch
  shrinks one sequence at a time from the whole burst to one), whose every step the
  engine logs (:class:`~dsbox.metrics.steps.StepRecord`: from scheduling to the answer
  handled, on instances of PP 1): each step's wall time minus the fit's time for its
  shape, minus the KV pulls its worker ran inside it. A lone request cannot show a cost
  that grows with the batch: each sequence's token applied, detokenised and sent on in
  the engine's thread, in series with the model (on the project's 2-core CPU box about
  0.03 ms per sequence per step in the in-process engine, and 0.1 ms through worker
  processes). Nor can it show what instances sharing a machine cost each other: with a
  prefill and a decode worker and the engine on 2 cores, the step log of a 24 req/s run
  showed a decode step about 0.25 ms longer per ms of prefill beside it (the bursts' fits
  have given 0.02-0.26). Each burst step records how long steps of other instances
  overlapped it, and the fit gives that a coefficient (``interference``).

Each kind is fitted as ``ms + ms_per_token * context + ms_per_seq * sequences +
interference * overlap`` over both sample sets by least squares on the relative error of
the whole step, every term kept >= 0 (:func:`dsbox.placement.fitting.nonnegative_lstsq`).
Prefill and decode overheads differ (a prefill step's output crosses to the decode side,
a decode step's does not), so the profile keeps one of each
(:class:`~dsbox.placement.profile.StepOverhead`), and a third for the KV pull: the decode
workers time every copy (:class:`~dsbox.metrics.steps.PullRecord`), fitted as ``ms +
ms_per_token * prompt tokens`` (on the CPU box 0.04-0.4 ms plus 0.0003-0.001 ms per token).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dsbox.metrics.step_windows import step_windows
from dsbox.metrics.steps import PullRecord, StepRecord
from dsbox.placement.fitting import nonnegative_lstsq
from dsbox.placement.profile import StepFit, StepOverhead


@dataclass(frozen=True, slots=True)
class OverheadProbe:
    """The lone requests and bursts sent, and the placement they are served under."""

    placement: str = "colocated:tp=1"
    prompt_lens: tuple[int, ...] = (32, 128, 256, 512)
    output_lens: tuple[int, ...] = (16, 48)
    repeats: int = 3
    warmup: int = 1
    burst: int = 64            # requests per burst (0: no bursts)
    bursts: int = 2
    burst_max_output: int = 64

    def __post_init__(self) -> None:
        if not self.prompt_lens or not self.output_lens:
            raise ValueError("overhead probe: prompt_lens and output_lens must be non-empty")
        if min(self.prompt_lens) < 1 or min(self.output_lens) < 2:
            raise ValueError("overhead probe: prompts >= 1 token and outputs >= 2 tokens")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("overhead probe: repeats >= 1 and warmup >= 0 required")
        if self.burst < 0 or self.bursts < 0 or self.burst_max_output < 2:
            raise ValueError("overhead probe: burst >= 0, bursts >= 0 and "
                             "burst_max_output >= 2 required")

    def requests(self, max_len: int) -> list[tuple[int, int]]:
        """``(prompt, output)`` of every request that fits ``max_len`` positions."""
        return [(p, o) for p in self.prompt_lens for o in self.output_lens if p + o <= max_len]

    def burst_requests(self, max_len: int, burst: int = 0) -> list[tuple[int, int]]:
        """``(prompt, output)`` of burst number ``burst``: every prompt of one length (the
        bursts step from the shortest of ``prompt_lens`` to the longest, so that the
        context per sequence differs between them and a step's cost per sequence can be
        told from its cost per token of context), outputs spread from 2 to
        ``burst_max_output`` tokens (those that fit ``max_len``)."""
        n, top = self.burst, self.burst_max_output
        lens = sorted(self.prompt_lens)
        prompt = lens[round(burst * (len(lens) - 1) / max(1, self.bursts - 1)) % len(lens)]
        out = [(prompt, 2 + (k * (top - 2)) // max(1, n - 1)) for k in range(n)]
        return [(p, o) for p, o in out if p + o <= max_len]


@dataclass(frozen=True, slots=True)
class OverheadSample:
    """One step's overhead: its context and sequences, measured minus the fit, measured,
    and how long steps of other instances ran alongside it (ms)."""

    context: int
    seqs: int
    overhead_ms: float
    measured_ms: float
    overlap_ms: float = 0.0


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
    num_steps: int = 0             # logged steps of the bursts fitted on
    pull: StepOverhead = StepOverhead()  # a KV pull's time on its decode worker
    num_pulls: int = 0             # logged KV pulls of the bursts fitted on

    def provenance(self) -> dict:
        return {"placement": self.placement,
                "lone_requests": [r.to_dict() for r in self.requests],
                "burst_steps": self.num_steps, "burst_pulls": self.num_pulls}


def fit_overhead(samples: Sequence[OverheadSample]) -> StepOverhead:
    """``ms + ms_per_token * context + ms_per_seq * seqs + interference * overlap_ms``
    through ``samples``, every term >= 0, by least squares on the relative error of the
    whole step (model time plus overhead against the measured time), as the step fits are.
    Where every sample has the same number of sequences (lone requests only) the
    per-sequence term is 0: the constant holds it; where no step had another alongside,
    the interference is 0."""
    if not samples:
        raise ValueError("no overhead samples")
    x = np.array([(1.0, s.context, s.seqs, s.overlap_ms) for s in samples], dtype=np.float64)
    y = np.array([s.overhead_ms for s in samples], dtype=np.float64)
    w = 1.0 / np.maximum(np.array([s.measured_ms for s in samples]), 1e-9)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a, b, c, k = (nonnegative_lstsq(x / scale * w[:, None], y * w) / scale).tolist()
    return StepOverhead(a, b, c, k)


def fit_pull(pulls: Sequence[PullRecord]) -> StepOverhead:
    """A KV pull's copy time on the decode worker, ``ms + ms_per_token * prompt tokens``
    (both >= 0, least squares on the relative error); none without pulls."""
    if not pulls:
        return StepOverhead()
    x = np.array([(1.0, p.num_tokens) for p in pulls], dtype=np.float64)
    y = np.array([p.copy_ms for p in pulls], dtype=np.float64)
    w = 1.0 / np.maximum(y, 1e-3)
    scale = np.abs(x).max(axis=0)
    a, b = (nonnegative_lstsq(x / scale * w[:, None], y * w) / scale).tolist()
    return StepOverhead(a, b)


def overhead_samples(fit: StepFit, requests: Sequence[LoneRequest]
                     ) -> tuple[list[OverheadSample], list[OverheadSample]]:
    """(prefill, decode) samples of lone requests: one sequence each."""
    prefill, decode = [], []
    for r in requests:
        ttft = r.ttft * 1e3
        prefill.append(OverheadSample(r.prompt, 1, ttft - fit.prefill_ms([r.prompt]), ttft))
        contexts = range(r.prompt + 1, r.prompt + r.output)
        model = statistics.fmean(fit.decode_ms(1, c) for c in contexts)
        tpot = r.tpot * 1e3
        decode.append(OverheadSample(round(statistics.fmean(contexts)), 1, tpot - model, tpot))
    return prefill, decode


def step_samples(fit: StepFit, steps: Sequence[StepRecord], pulls: Sequence[PullRecord] = ()
                 ) -> tuple[list[OverheadSample], list[OverheadSample]]:
    """(prefill, decode) samples of logged steps: wall time minus the fit's model time and
    minus the KV pulls its worker ran inside the step's window (the simulator charges those
    apart), with the ms that other instances' steps overlapped it."""
    prefill, decode = [], []
    windows = step_windows(steps, pulls)
    for st, over, pull_ms in zip(steps, windows.overlap_ms, windows.pulled_ms, strict=True):
        wall = st.wall_ms
        if st.is_prefill:
            model = fit.prefill_batch_ms(st.num_tokens, st.sum_sq_tokens)
            prefill.append(OverheadSample(st.sum_context, st.num_seqs, wall - model - pull_ms,
                                          wall, over))
        else:
            model = fit.decode_ms(st.num_seqs, st.sum_context)
            decode.append(OverheadSample(st.sum_context, st.num_seqs, wall - model - pull_ms,
                                         wall, over))
    return prefill, decode


def send_lone_requests(client, probe: OverheadProbe,
                       progress: Callable[[int, int, str], None] | None = None
                       ) -> list[LoneRequest]:
    """Send ``probe``'s requests to ``client`` one at a time (after ``warmup`` unmeasured
    rounds); each shape keeps the median TTFT and TPOT of its ``repeats`` (the machine's
    typical speed, as the grid's step times)."""
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
    return [LoneRequest(p, o, statistics.median(t for t, _ in runs),
                        statistics.median(t for _, t in runs))
            for (p, o), runs in seen.items()]


def send_bursts(client, probe: OverheadProbe,
                progress: Callable[[int, int, str], None] | None = None
                ) -> tuple[list[StepRecord], list[PullRecord]]:
    """Send ``probe.bursts`` bursts of ``probe.burst`` requests to ``client`` (an engine),
    one after the other, and return the steps its instances of PP 1 ran for them and the
    KV pulls its decode instances made."""
    from dsbox.engine.core.sampling_params import SamplingParams

    if not probe.burst or not probe.bursts:
        return [], []
    vocab = client.spec.vocab_size
    flat = {i.instance_id for i in client.stats().instances if i.pp == 1}
    steps: list[StepRecord] = []
    pulls: list[PullRecord] = []
    for b in range(probe.bursts):
        shapes = probe.burst_requests(client.max_model_len, b)
        if not shapes:
            continue
        _, cursor = client.steps_since(0)
        _, pull_cursor = client.pulls_since(0)
        prompts = [[(29 * k + 7 * j + 13) % vocab for k in range(p)]
                   for j, (p, _) in enumerate(shapes)]
        params = [SamplingParams(max_tokens=o, temperature=0.0, ignore_eos=True)
                  for _, o in shapes]
        outs = client.generate(prompts, params, tag="profile-overhead", timeout=600)
        bad = [o for o in outs if o.error is not None]
        if bad:
            raise ValueError(f"overhead probe burst failed: {bad[0].error}")
        records, _ = client.steps_since(cursor)
        steps += [r for r in records if r.instance_id in flat]
        pulls += client.pulls_since(pull_cursor)[0]
        if progress is not None:
            progress(b + 1, probe.bursts,
                     f"burst of {len(shapes)} requests of {shapes[0][0]} prompt tokens")
    return steps, pulls


def measure_overhead(client, fit: StepFit, probe: OverheadProbe,
                     progress: Callable[[int, int, str], None] | None = None) -> OverheadRun:
    """Lone requests and bursts on ``client`` (an engine under ``probe.placement``)
    against ``fit``."""
    requests = send_lone_requests(client, probe, progress)
    steps, pulls = send_bursts(client, probe, progress)
    prefill, decode = overhead_samples(fit, requests)
    loaded_prefill, loaded_decode = step_samples(fit, steps, pulls)
    return OverheadRun(fit_overhead(prefill + loaded_prefill),
                       fit_overhead(decode + loaded_decode), tuple(requests),
                       probe.placement, len(steps), fit_pull(pulls), len(pulls))


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
