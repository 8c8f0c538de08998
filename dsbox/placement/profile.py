"""Latency profiles: fitted step-time coefficients and KV capacity of one model on one device.

A profile file is JSON (format ``dsbox-profile/1``), one per (device kind, model)::

    {"format": "dsbox-profile/1", "model": "opt-13b", "device": "a100-80g",
     "device_name": "...", "dtype": "float16", "device_memory_bytes": 85899345920,
     "units": "ms", "default_engine": "distserve",
     "fits": {"distserve": {"1": {"prefill": [a, b, c], "decode_small": [a, b, c],
                                  "decode_large": [a, b, c], "decode_threshold": 95}}},
     "kv_capacity_tokens": [{"tp": 1, "pp": 1, "tokens": 66144}],
     "prefill_token_budget": {"1": 768},
     "step_overhead": {"prefill": {"ms": 0.0, "ms_per_token": 0.0, "ms_per_seq": 0.0,
                                   "interference": 0.0},
                       "decode": {...}, "kv_pull": {...}},
     "provenance": {...}}

Step time in milliseconds, in the form DistServe fitted (paper Appendix A): a prefill step
over prompt lengths ``l`` takes ``a + b*sum(l) + c*sum(l^2)``; a decode step over ``B``
sequences of context lengths ``ctx`` takes ``a + b*sum(ctx) + c*B``, with the ``small``
coefficients below ``decode_threshold`` sequences and the ``large`` ones from there on.
``fits`` may hold several engines' fits (the built-in ``a100-80g`` carries DistServe's and
vLLM's). KV capacity (tokens per instance) per (TP, PP) comes from the file when listed,
else from device memory. ``step_overhead`` is the serving runtime's own cost per step
(scheduling, IPC, batch building) on top of the model's step time, one per step kind:
``ms`` plus ``ms_per_token`` per token of context in the step plus ``ms_per_seq`` per
sequence in it (a file without ``ms_per_seq`` has none); the simulator adds the
prefill one to every prefill step and the decode one to every decode step.
``interference`` is how much longer a step runs, in ms, per ms that a step of another
instance runs beside it (instances sharing a CPU's cores and memory bandwidth; 0 where
each has its own GPU). ``kv_pull`` is a KV pull's time on the decode worker, ``ms`` plus
``ms_per_token`` per prompt token moved (a file without it has none). ``dsbox
profile`` measures it on the running engine (:mod:`dsbox.placement.overhead`); it is 0 in
the published fits (their runs include the engine's overhead in the fit). Older files'
``step_overhead_ms`` / ``step_overhead_ms_per_token`` (one overhead for every step) load
as both kinds; a file without either has none. A derived profile says so in
``provenance["derived"]``.

Built-in profiles live in ``dsbox/data/profiles/<device>/<model>.json``;
:mod:`dsbox.placement.profile_source` finds a model's profile (a file, a directory, a
built-in one, or one derived for a GPU of the table).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from dsbox.config.model_spec import ModelSpec

PROFILE_FORMAT = "dsbox-profile/1"
BUILTIN_PACKAGE = "dsbox"
BUILTIN_DIR = ("data", "profiles")
DEFAULT_MEMORY_UTILIZATION = 0.9
BUDGET_SEARCH_MAX = 4096   # largest prefill token budget considered when deriving L_m
BUDGET_PLATEAU = 0.95      # L_m: smallest budget reaching this share of peak throughput


def _coeffs(value, what: str) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"{what}: expected three coefficients [a, b, c], got {value!r}")
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what}: coefficients must be finite, got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class StepFit:
    """Step-time coefficients (ms) of one model on one device at one TP degree."""

    prefill: tuple[float, float, float]
    decode_small: tuple[float, float, float]
    decode_large: tuple[float, float, float]
    decode_threshold: int = 95

    def __post_init__(self) -> None:
        for name in ("prefill", "decode_small", "decode_large"):
            object.__setattr__(self, name, _coeffs(getattr(self, name), name))
        if self.decode_threshold < 1:
            raise ValueError(f"decode_threshold must be >= 1, got {self.decode_threshold}")

    def prefill_ms(self, lengths) -> float:
        return self.prefill_batch_ms(sum(lengths), sum(x * x for x in lengths))

    def prefill_batch_ms(self, sum_len: int, sum_len_sq: int) -> float:
        """One prefill batch of ``sum_len`` tokens whose lengths' squares sum to
        ``sum_len_sq``."""
        a, b, c = self.prefill
        return a + b * sum_len + c * sum_len_sq

    def decode_ms(self, batch_size: int, sum_context: int) -> float:
        a, b, c = self.decode_small if batch_size < self.decode_threshold else self.decode_large
        return a + b * sum_context + c * batch_size

    def prefill_token_budget(self, max_tokens: int = BUDGET_SEARCH_MAX) -> int:
        """L_m from the fit: the smallest budget (multiple of 64) at which one prefill of that
        many tokens reaches ``BUDGET_PLATEAU`` of the best throughput up to ``max_tokens``."""
        points = [(n, self.prefill_ms([n])) for n in range(64, max_tokens + 1, 64)]
        return detect_token_budget(points)

    def to_dict(self) -> dict:
        return {"prefill": list(self.prefill), "decode_small": list(self.decode_small),
                "decode_large": list(self.decode_large),
                "decode_threshold": self.decode_threshold}

    @classmethod
    def from_dict(cls, data: dict) -> StepFit:
        try:
            return cls(data["prefill"], data["decode_small"], data["decode_large"],
                       int(data.get("decode_threshold", 95)))
        except KeyError as exc:
            raise ValueError(f"step fit is missing {exc.args[0]!r}") from None


def detect_token_budget(points, plateau: float = BUDGET_PLATEAU) -> int:
    """L_m: the smallest token count whose throughput (tokens / time) is within ``plateau``
    of the best over ``points`` (``(num_tokens, time)`` pairs, any time unit)."""
    rates = [(n, n / t) for n, t in points if t > 0 and n > 0]
    if not rates:
        raise ValueError("no positive (tokens, time) points to find L_m from")
    best = max(r for _, r in rates)
    return min(n for n, r in rates if r >= plateau * best)


@dataclass(frozen=True, slots=True)
class StepOverhead:
    """The serving runtime's own cost of one step:
    ``ms + ms_per_token * sum(context) + ms_per_seq * num_seqs``, plus ``interference`` ms
    for every ms that a step of another instance runs alongside it (instances sharing the
    machine's cores or memory bandwidth: a CPU box; 0 for GPUs of their own). The KV pull
    cost uses the same form: ``num_seqs`` is 1 and the context is the prompt."""

    ms: float = 0.0
    ms_per_token: float = 0.0
    ms_per_seq: float = 0.0
    interference: float = 0.0

    def __post_init__(self) -> None:
        terms = (self.ms, self.ms_per_token, self.ms_per_seq, self.interference)
        if not all(t >= 0 and math.isfinite(t) for t in terms):
            raise ValueError(f"step overheads must be finite and >= 0 ms, got {self!r}")

    def seconds(self, sum_context: int, num_seqs: int = 1) -> float:
        return (self.ms + self.ms_per_token * sum_context + self.ms_per_seq * num_seqs) * 1e-3

    def to_dict(self) -> dict:
        return {"ms": self.ms, "ms_per_token": self.ms_per_token, "ms_per_seq": self.ms_per_seq,
                "interference": self.interference}

    def describe(self) -> str:
        """``"0.5 ms + 0.001 ms/token + 0.02 ms/seq"`` (and ``+ 0.25 ms/ms alongside``)."""
        text = (f"{self.ms:.3g} ms + {self.ms_per_token:.3g} ms/token + "
                f"{self.ms_per_seq:.3g} ms/seq")
        if self.interference:
            text += f" + {self.interference:.3g} ms per ms alongside"
        return text

    def describe_pull(self) -> str:
        """As a KV pull's cost: ``"0.3 ms + 0.001 ms per prompt token"``."""
        return f"{self.ms:.3g} ms + {self.ms_per_token:.3g} ms per prompt token"

    @classmethod
    def from_dict(cls, data: dict) -> StepOverhead:
        return cls(float(data.get("ms", 0.0)), float(data.get("ms_per_token", 0.0)),
                   float(data.get("ms_per_seq", 0.0)), float(data.get("interference", 0.0)))


def _overheads(data: dict) -> tuple[StepOverhead, StepOverhead, StepOverhead]:
    """(prefill, decode, KV pull) overheads of a profile file (see the module docstring)."""
    if "step_overhead" in data:
        kinds = data["step_overhead"]
        return (StepOverhead.from_dict(kinds.get("prefill", {})),
                StepOverhead.from_dict(kinds.get("decode", {})),
                StepOverhead.from_dict(kinds.get("kv_pull", {})))
    both = StepOverhead(float(data.get("step_overhead_ms", 0.0)),
                        float(data.get("step_overhead_ms_per_token", 0.0)))
    return both, both, StepOverhead()


@dataclass(slots=True)
class LatencyProfile:
    """Fits and KV capacities of one model on one device kind."""

    model: str
    device: str
    fits: dict[str, dict[int, StepFit]]
    default_engine: str
    dtype: str = "float16"
    device_memory_bytes: int = 80 * 2**30
    device_name: str = ""
    kv_capacity_tokens: dict[tuple[int, int], int] = field(default_factory=dict)
    prefill_token_budget: dict[int, int] = field(default_factory=dict)
    memory_utilization: float = DEFAULT_MEMORY_UTILIZATION
    provenance: dict = field(default_factory=dict)
    measurements: list = field(default_factory=list)
    prefill_overhead: StepOverhead = StepOverhead()  # the runtime's own cost per step
    decode_overhead: StepOverhead = StepOverhead()
    pull_overhead: StepOverhead = StepOverhead()     # a KV pull's time on its decode worker

    def __post_init__(self) -> None:
        if not self.fits:
            raise ValueError(f"profile {self.device}/{self.model}: no fits")
        if self.default_engine not in self.fits:
            raise ValueError(f"profile {self.device}/{self.model}: default engine "
                             f"{self.default_engine!r} has no fit; have {sorted(self.fits)}")
        for engine, per_tp in self.fits.items():
            if not per_tp:
                raise ValueError(f"profile {self.device}/{self.model}: engine {engine!r} "
                                 "has no TP entries")
        if self.device_memory_bytes <= 0:
            raise ValueError("device_memory_bytes must be positive")
        if not 0 < self.memory_utilization <= 1:
            raise ValueError("memory_utilization must be in (0, 1]")
        for kind in (self.prefill_overhead, self.decode_overhead, self.pull_overhead):
            if not isinstance(kind, StepOverhead):
                raise ValueError(f"step overheads must be StepOverhead, got {kind!r}")

    @property
    def derived(self) -> bool:
        """Whether the fits come from the analytic model rather than measurements."""
        return bool(self.provenance.get("derived"))

    # --- queries -------------------------------------------------------------------------
    def engine(self, engine: str | None = None) -> str:
        name = engine or self.default_engine
        if name not in self.fits:
            raise ValueError(f"profile {self.device}/{self.model} has no {name!r} fit; "
                             f"have {sorted(self.fits)}")
        return name

    def tps(self, engine: str | None = None) -> list[int]:
        return sorted(self.fits[self.engine(engine)])

    def fit(self, tp: int, engine: str | None = None) -> StepFit:
        per_tp = self.fits[self.engine(engine)]
        if tp not in per_tp:
            raise ValueError(f"profile {self.device}/{self.model} has no fit for tp={tp}; "
                             f"have tp in {sorted(per_tp)}")
        return per_tp[tp]

    def token_budget(self, tp: int, engine: str | None = None) -> int:
        """The prefill token budget L_m at this TP (from the file, else from the fit)."""
        if tp in self.prefill_token_budget:
            return self.prefill_token_budget[tp]
        return self.fit(tp, engine).prefill_token_budget()

    def kv_tokens(self, spec: ModelSpec, tp: int, pp: int) -> int:
        """KV capacity (tokens) of one instance: the file's figure, else from memory."""
        if (tp, pp) in self.kv_capacity_tokens:
            return self.kv_capacity_tokens[(tp, pp)]
        shards = tp * pp
        free = (self.device_memory_bytes * self.memory_utilization
                - spec.weight_bytes(self.dtype) / shards)
        per_token = spec.kv_bytes_per_token(self.dtype) / shards
        return max(0, int(free // per_token))

    # --- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "device_memory_bytes": self.device_memory_bytes,
            "memory_utilization": self.memory_utilization,
            "units": "ms",
            "default_engine": self.default_engine,
            "fits": {eng: {str(tp): fit.to_dict() for tp, fit in sorted(per_tp.items())}
                     for eng, per_tp in self.fits.items()},
            "kv_capacity_tokens": [{"tp": tp, "pp": pp, "tokens": n}
                                   for (tp, pp), n in sorted(self.kv_capacity_tokens.items())],
            "prefill_token_budget": {str(tp): n
                                     for tp, n in sorted(self.prefill_token_budget.items())},
            "step_overhead": {"prefill": self.prefill_overhead.to_dict(),
                              "decode": self.decode_overhead.to_dict(),
                              "kv_pull": self.pull_overhead.to_dict()},
            "provenance": self.provenance,
            "measurements": self.measurements,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "profile") -> LatencyProfile:
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{source}: not a {PROFILE_FORMAT} file "
                             f"(format={data.get('format')!r})")
        if data.get("units", "ms") != "ms":
            raise ValueError(f"{source}: units must be 'ms'")
        try:
            prefill_overhead, decode_overhead, pull_overhead = _overheads(data)
            fits = {eng: {int(tp): StepFit.from_dict(f) for tp, f in per_tp.items()}
                    for eng, per_tp in data["fits"].items()}
            kv = {(int(e["tp"]), int(e["pp"])): int(e["tokens"])
                  for e in data.get("kv_capacity_tokens", [])}
            return cls(
                model=data["model"],
                device=data["device"],
                fits=fits,
                default_engine=data.get("default_engine") or next(iter(fits)),
                dtype=data.get("dtype", "float16"),
                device_memory_bytes=int(data.get("device_memory_bytes", 80 * 2**30)),
                device_name=data.get("device_name", ""),
                kv_capacity_tokens=kv,
                prefill_token_budget={int(k): int(v) for k, v in
                                      data.get("prefill_token_budget", {}).items()},
                memory_utilization=float(data.get("memory_utilization",
                                                  DEFAULT_MEMORY_UTILIZATION)),
                provenance=data.get("provenance", {}),
                measurements=data.get("measurements", []),
                prefill_overhead=prefill_overhead,
                decode_overhead=decode_overhead,
                pull_overhead=pull_overhead,
            )
        except KeyError as exc:
            raise ValueError(f"{source}: missing key {exc.args[0]!r}") from None

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> LatencyProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))
