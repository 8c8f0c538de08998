"""Analytic step times from a model's shapes and a GPU's figures, calibrated on measured fits.

A step's time (ms) on one instance of TP ``t`` is a roofline plus overheads:

- prefill of prompts ``l``: ``max(W/t / BW_eff, sum(l) * F_tok/t / FLOPS_eff)`` (weights read
  once, or the linear layers' compute) ``+ sum(l^2) * 2 L h / t / FLOPS_eff`` (causal
  attention) ``+ sum(l) * comm + fixed``;
- decode of ``B`` sequences over ``sum(ctx)`` tokens of context: ``max(W/t / BW_eff,
  B * F_tok/t / FLOPS_eff) + sum(ctx) * KV/t / BW_eff + B * (comm + seq_ms) + fixed``;

with ``W`` the weight bytes, ``F_tok = 2 L (4h^2 + 2 h f)`` the linear layers' FLOPs per
token, ``KV`` the KV bytes per token, ``comm = comm_factor * 2 L * 2h bytes * 2(t-1)/t /
link`` (two all-reduces per layer, ring) and ``fixed = step_ms + L * layer_ms + 2L *
allreduce_ms`` (the last for ``t > 1``). ``BW_eff`` and ``FLOPS_eff`` are the GPU's peak
memory bandwidth and dense fp16 FLOP/s (:mod:`dsbox.placement.gpus`) times the efficiencies.

Calibration (:func:`calibrate`): the efficiencies (a grid) and the overheads (non-negative
least squares on relative error) that best reproduce the measured fits of the built-in
``a100-80g`` profile (DistServe's OPT-13B and OPT-66B) on a grid of step shapes, one set for
prefill and one for decode, per engine. :func:`derive_profile` then "measures" the model on
the profiler's grid with these times and fits DistServe's form with the profiler's own
fitting code, for TP 1, 2, 4 and 8 (those dividing the heads), so a derived profile is used
exactly like a measured one. :func:`derivation_error` reports how far the derived fits land
from the measured ones, in sample and calibrated on the other model only.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import asdict, dataclass

import numpy as np

from dsbox.config.model_spec import ModelSpec, get_model_spec
from dsbox.placement.fitting import DecodePoint, PrefillPoint, fit_step
from dsbox.placement.gpus import GpuSpec, get_gpu
from dsbox.placement.profile import LatencyProfile, StepFit, detect_token_budget
from dsbox.placement.profile_source import load_profile

CALIBRATION_DEVICE = "a100-80g"
CALIBRATION_MODELS = ("opt-13b", "opt-66b")
DERIVED_TPS = (1, 2, 4, 8)
DTYPE_BYTES = 2  # fp16
PREFILL_BATCHES = (1, 2, 4)
PREFILL_LENGTHS = (32, 64, 128, 256, 512, 1024, 2048)
MAX_PREFILL_TOKENS = 8192
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256)
DECODE_CONTEXTS = (128, 512, 1024, 2048)
EFFICIENCY_GRID = tuple(round(0.2 + 0.02 * i, 2) for i in range(41))  # 0.2 .. 1.0


@dataclass(frozen=True, slots=True)
class PhaseParams:
    """Calibrated constants of one phase (prefill or decode); times in ms."""

    mem_efficiency: float
    compute_efficiency: float
    step_ms: float = 0.0
    layer_ms: float = 0.0
    allreduce_ms: float = 0.0
    comm_factor: float = 0.0
    seq_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.mem_efficiency <= 1 and 0 < self.compute_efficiency <= 1):
            raise ValueError("efficiencies must be in (0, 1]")
        if min(self.step_ms, self.layer_ms, self.allreduce_ms, self.comm_factor,
               self.seq_ms) < 0:
            raise ValueError("overheads must be >= 0")


@dataclass(frozen=True, slots=True)
class Calibration:
    """Prefill and decode constants of one engine."""

    engine: str
    prefill: PhaseParams
    decode: PhaseParams
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Shape:
    """The per-instance figures the formulas need (bytes, FLOPs, ms per unit)."""

    layers: int
    weight_ms: float      # W/t over peak bandwidth
    token_ms: float       # F_tok/t over peak FLOP/s
    attn_ms: float        # 2 L h / t over peak FLOP/s (per prompt token squared)
    kv_ms: float          # KV/t over peak bandwidth (per context token)
    comm_ms: float        # all-reduce bytes of one token over the link (0 at t = 1)
    allreduces: int       # 2L for t > 1, else 0


def _shape(spec: ModelSpec, tp: int, gpu: GpuSpec) -> _Shape:
    h, f, L = spec.hidden_size, spec.ffn_dim, spec.num_layers
    flops_tok = 2 * L * (4 * h * h + 2 * h * f)
    comm_bytes = 2 * L * h * DTYPE_BYTES * 2 * (tp - 1) / tp
    return _Shape(
        layers=L,
        weight_ms=spec.weight_bytes("float16") / tp / gpu.memory_bandwidth * 1e3,
        token_ms=flops_tok / tp / gpu.peak_flops * 1e3,
        attn_ms=2 * L * h / tp / gpu.peak_flops * 1e3,
        kv_ms=spec.kv_bytes_per_token("float16") / tp / gpu.memory_bandwidth * 1e3,
        comm_ms=comm_bytes / gpu.link_bandwidth * 1e3,
        allreduces=2 * L if tp > 1 else 0,
    )


# --- the formulas: a roofline part (fixed efficiencies) plus overhead features ------------
# A step's terms: (weights ms, linear compute ms, compute-bound extra ms, memory-bound extra
# ms, overhead features); at efficiencies (em, ec) the step takes
# max(weights/em, compute/ec) + extra_c/ec + extra_m/em + features . overheads.
def _prefill_terms(s: _Shape, lengths) -> tuple[float, float, float, float, list[float]]:
    n, sq = sum(lengths), sum(x * x for x in lengths)
    return (s.weight_ms, n * s.token_ms, sq * s.attn_ms, 0.0,
            [1.0, s.layers, s.allreduces, n * s.comm_ms, len(lengths)])


def _decode_terms(s: _Shape, batch: int, sum_ctx: int
                  ) -> tuple[float, float, float, float, list[float]]:
    return (s.weight_ms, batch * s.token_ms, 0.0, sum_ctx * s.kv_ms,
            [1.0, s.layers, s.allreduces, batch * s.comm_ms, batch])


def _time(terms, p: PhaseParams) -> float:
    w, c, xc, xm, feats = terms
    em, ec = p.mem_efficiency, p.compute_efficiency
    overheads = (p.step_ms, p.layer_ms, p.allreduce_ms, p.comm_factor, p.seq_ms)
    return (max(w / em, c / ec) + xc / ec + xm / em
            + sum(f * o for f, o in zip(feats, overheads, strict=True)))


def prefill_ms(spec: ModelSpec, tp: int, gpu: GpuSpec, params: PhaseParams,
               lengths) -> float:
    return _time(_prefill_terms(_shape(spec, tp, gpu), lengths), params)


def decode_ms(spec: ModelSpec, tp: int, gpu: GpuSpec, params: PhaseParams, batch: int,
              sum_context: int) -> float:
    return _time(_decode_terms(_shape(spec, tp, gpu), batch, sum_context), params)


# --- the shapes compared ------------------------------------------------------------------
def prefill_shapes() -> list[tuple[int, ...]]:
    return [(n,) * b for b in PREFILL_BATCHES for n in PREFILL_LENGTHS
            if b * n <= MAX_PREFILL_TOKENS]


def decode_shapes(max_tokens: int | None = None) -> list[tuple[int, int]]:
    """``(batch, sum_context)`` pairs, within ``max_tokens`` of KV when given."""
    return [(b, b * c) for b in DECODE_BATCHES for c in DECODE_CONTEXTS
            if max_tokens is None or b * c <= max_tokens]


# --- calibration ---------------------------------------------------------------------------
def _fit_phase(terms: list, measured: list[float]) -> PhaseParams:
    """Efficiencies on a grid, overheads by non-negative least squares (active set: drop
    the most negative unknown and solve again), minimising the squared relative error."""
    y = np.array(measured)[:, None]
    w, c, xc, xm = (np.array([t[k] for t in terms])[:, None] for k in range(4))
    a = np.array([t[4] for t in terms]) / y
    grid = np.array(EFFICIENCY_GRID)
    em, ec = np.repeat(grid, len(grid)), np.tile(grid, len(grid))
    rhs = (y - np.maximum(w / em, c / ec) - xc / ec - xm / em) / y  # rows x grid points
    pinv: dict[tuple[int, ...], np.ndarray] = {}

    def solve(cols: tuple[int, ...], r: np.ndarray) -> np.ndarray:
        if cols not in pinv:
            pinv[cols] = np.linalg.pinv(a[:, cols])
        return pinv[cols] @ r

    every = tuple(range(a.shape[1]))
    coef = solve(every, rhs)
    for g in np.nonzero((coef < 0).any(axis=0))[0]:
        cols = list(every)
        while True:
            sol = solve(tuple(cols), rhs[:, g])
            if (sol >= 0).all() or len(cols) == 1:
                break
            cols.pop(int(np.argmin(sol)))
        coef[:, g] = 0.0
        coef[cols, g] = np.maximum(sol, 0.0)
    err = ((a @ coef - rhs) ** 2).sum(axis=0)
    k = int(np.argmin(err))
    return PhaseParams(float(em[k]), float(ec[k]), *(float(x) for x in coef[:, k]))


def _measured(models, engine: str) -> list[tuple[ModelSpec, int, StepFit, int]]:
    out = []
    for name in models:
        prof = load_profile(CALIBRATION_DEVICE, name)
        spec = get_model_spec(name)
        for tp in prof.tps(engine):
            out.append((spec, tp, prof.fit(tp, engine), prof.kv_tokens(spec, tp, 1)))
    return out


@functools.cache
def calibrate(engine: str = "distserve", models: tuple[str, ...] = CALIBRATION_MODELS
              ) -> Calibration:
    """The constants that best reproduce ``engine``'s measured fits of ``models`` on the
    calibration GPU (deterministic; cached)."""
    gpu = get_gpu(CALIBRATION_DEVICE)
    pre, pre_y, dec, dec_y = [], [], [], []
    for spec, tp, fit, kv in _measured(models, engine):
        shape = _shape(spec, tp, gpu)
        for ls in prefill_shapes():
            pre.append(_prefill_terms(shape, ls))
            pre_y.append(fit.prefill_ms(ls))
        for b, c in decode_shapes(kv):
            dec.append(_decode_terms(shape, b, c))
            dec_y.append(fit.decode_ms(b, c))
    return Calibration(engine, _fit_phase(pre, pre_y), _fit_phase(dec, dec_y), tuple(models))


# --- derived fits and profiles --------------------------------------------------------------
def derive_fit(spec: ModelSpec, tp: int, gpu: GpuSpec, cal: Calibration) -> StepFit:
    """DistServe's form fitted (as ``dsbox profile`` does) to analytic step times."""
    pre = [PrefillPoint(ls, prefill_ms(spec, tp, gpu, cal.prefill, ls))
           for ls in prefill_shapes()]
    dec = [DecodePoint(b, c, decode_ms(spec, tp, gpu, cal.decode, b, c))
           for b, c in decode_shapes()]
    return fit_step(pre, dec)


def derived_tps(spec: ModelSpec) -> list[int]:
    return [tp for tp in DERIVED_TPS if spec.num_heads % tp == 0]


def derive_profile(spec: ModelSpec, gpu: GpuSpec | str,
                   engines: tuple[str, ...] = ("distserve", "vllm")) -> LatencyProfile:
    """A profile of ``spec`` on ``gpu`` from the analytic model (engines calibrated on the
    built-in a100-80g fits), marked as derived, with its derivation error."""
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    fits: dict[str, dict[int, StepFit]] = {}
    for engine in engines:
        cal = calibrate(engine)
        fits[engine] = {tp: derive_fit(spec, tp, gpu, cal) for tp in derived_tps(spec)}
    budget = {tp: detect_token_budget([(n, fits[engines[0]][tp].prefill_ms([n]))
                                       for n in range(64, 4097, 64)])
              for tp in derived_tps(spec)}
    error = derivation_error(engines[0])
    provenance = {
        "source": "derived: analytic model (dsbox.placement.analytic) from the model's "
                  "shapes and the GPU's datasheet figures",
        "derived": True,
        "gpu": gpu.describe(),
        "calibrated_on": f"measured {CALIBRATION_DEVICE} fits of "
                         f"{', '.join(CALIBRATION_MODELS)} (DistServe's published fits)",
        "calibration": {e: asdict(calibrate(e)) for e in engines},
        "derivation_error": error.to_dict(),
    }
    return LatencyProfile(
        model=spec.name, device=gpu.name, device_name=gpu.full_name, fits=fits,
        default_engine=engines[0], dtype="float16", device_memory_bytes=gpu.memory_bytes,
        prefill_token_budget=budget, provenance=provenance)


# --- how far the derivation lands -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorRow:
    """Relative step-time errors of a derived fit against a measured one."""

    model: str
    tp: int
    calibrated_on: tuple[str, ...]
    prefill_median: float
    prefill_max: float
    decode_median: float
    decode_max: float


@dataclass(frozen=True, slots=True)
class DerivationError:
    rows: tuple[ErrorRow, ...]

    def summary(self, in_sample: bool) -> tuple[float, float]:
        """Median and worst relative step-time error over the rows (``in_sample``: rows
        calibrated on their own model among others; else on the other model only)."""
        rows = [r for r in self.rows if (r.model in r.calibrated_on) == in_sample]
        med = statistics.median([v for r in rows for v in (r.prefill_median, r.decode_median)])
        worst = max(v for r in rows for v in (r.prefill_max, r.decode_max))
        return med, worst

    def describe(self) -> str:
        med, worst = self.summary(True)
        o_med, o_worst = self.summary(False)
        return (f"on the measured {CALIBRATION_DEVICE} fits of "
                f"{' and '.join(CALIBRATION_MODELS)} the derived step times are off by "
                f"{med:.0%} median ({worst:.0%} worst); calibrated on the other model only, "
                f"{o_med:.0%} median ({o_worst:.0%} worst)")

    def to_dict(self) -> dict:
        med, worst = self.summary(True)
        o_med, o_worst = self.summary(False)
        return {"median": med, "worst": worst, "other_model_median": o_med,
                "other_model_worst": o_worst, "summary": self.describe(),
                "rows": [asdict(r) for r in self.rows]}


def _errors(spec: ModelSpec, tp: int, derived: StepFit, measured: StepFit, kv: int
            ) -> tuple[float, float, float, float]:
    pre = [abs(derived.prefill_ms(ls) - measured.prefill_ms(ls)) / measured.prefill_ms(ls)
           for ls in prefill_shapes()]
    dec = [abs(derived.decode_ms(b, c) - measured.decode_ms(b, c)) / measured.decode_ms(b, c)
           for b, c in decode_shapes(kv)]
    return statistics.median(pre), max(pre), statistics.median(dec), max(dec)


@functools.cache
def derivation_error(engine: str = "distserve") -> DerivationError:
    """Derived vs measured fits on the calibration GPU, for every measured (model, TP):
    calibrated on all models, and calibrated on the other models only."""
    gpu = get_gpu(CALIBRATION_DEVICE)
    rows = []
    for models in (CALIBRATION_MODELS,) + tuple(
            tuple(m for m in CALIBRATION_MODELS if m != held) for held in CALIBRATION_MODELS):
        cal = calibrate(engine, models)
        targets = models if models == CALIBRATION_MODELS else \
            tuple(m for m in CALIBRATION_MODELS if m not in models)
        for spec, tp, fit, kv in _measured(targets, engine):
            derived = derive_fit(spec, tp, gpu, cal)
            rows.append(ErrorRow(spec.name, tp, models, *_errors(spec, tp, derived, fit, kv)))
    return DerivationError(tuple(rows))
