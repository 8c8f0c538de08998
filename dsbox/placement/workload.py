"""Request samples for the search: fixed lengths and unit-rate Poisson arrivals.

A :class:`RequestSample` draws ``n`` requests (prompt and output token counts) and the
arrival times of a rate-1 Poisson process once, with a seed; :meth:`RequestSample.at_rate`
scales the arrivals to any rate. Every rate of a binary search thus sees the same requests
in the same order (common random numbers), so attainment falls smoothly with rate.

Lengths come from ``dsbox.workloads`` (ShareGPT, HumanEval, long documents, measured with
the bundled tokenizer) or, for tests and quick runs, from :func:`synthetic_lengths`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsbox.placement.sim_types import SimTrace


@dataclass(frozen=True, slots=True)
class RequestSample:
    """``n`` requests with arrival times of a rate-1 Poisson process."""

    unit_arrivals: tuple[float, ...]
    prompt_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    name: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        n = len(self.unit_arrivals)
        if n == 0:
            raise ValueError("a request sample needs at least one request")
        if len(self.prompt_lens) != n or len(self.output_lens) != n:
            raise ValueError("unit_arrivals, prompt_lens and output_lens differ in length")

    def __len__(self) -> int:
        return len(self.unit_arrivals)

    def at_rate(self, rate: float, num_requests: int | None = None) -> SimTrace:
        """The first ``num_requests`` (default: all) requests at ``rate`` requests/s."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        n = len(self) if num_requests is None else num_requests
        if not 1 <= n <= len(self):
            raise ValueError(f"num_requests must be in 1..{len(self)}, got {n}")
        scale = 1.0 / rate
        return SimTrace(tuple(t * scale for t in self.unit_arrivals[:n]), self.prompt_lens[:n],
                        self.output_lens[:n])

    @property
    def max_total_tokens(self) -> int:
        return max(p + o for p, o in zip(self.prompt_lens, self.output_lens, strict=True))

    @property
    def max_prompt_tokens(self) -> int:
        return max(self.prompt_lens)

    @property
    def mean_prompt(self) -> float:
        return float(np.mean(self.prompt_lens))

    @property
    def mean_output(self) -> float:
        return float(np.mean(self.output_lens))

    @property
    def mean_prompt_sq(self) -> float:
        return float(np.mean(np.square(np.asarray(self.prompt_lens, dtype=np.float64))))

    def batch_share(self, budget: int) -> float:
        """Mean of ``min(1, prompt / budget)``."""
        p = np.asarray(self.prompt_lens, dtype=np.float64)
        return float(np.minimum(1.0, p / budget).mean())

    def decode_moments(self) -> tuple[float, float]:
        """Mean decode steps per request (``output - 1``) and mean sum over them of the
        step's context (``prompt + j`` for ``j = 1 .. output - 1``)."""
        p = np.asarray(self.prompt_lens, dtype=np.float64)
        steps = np.asarray(self.output_lens, dtype=np.float64) - 1
        return float(steps.mean()), float((steps * p + steps * (steps + 1) / 2).mean())

    def key(self) -> tuple:
        """A cheap identity for caches."""
        return (self.name, self.seed, len(self), sum(self.prompt_lens), sum(self.output_lens))


def sample_requests(lengths: Sequence[tuple[int, int]], num_requests: int, seed: int = 0,
                    name: str = "") -> RequestSample:
    """Draw ``num_requests`` of ``(prompt, output)`` pairs (without replacement when there
    are enough) and rate-1 Poisson arrivals, all from ``seed``."""
    if not lengths:
        raise ValueError("no requests to sample from")
    if num_requests < 1:
        raise ValueError(f"num_requests must be >= 1, got {num_requests}")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(lengths), size=num_requests, replace=num_requests > len(lengths))
    arrivals = np.cumsum(rng.exponential(1.0, size=num_requests))
    prompts = tuple(int(lengths[i][0]) for i in picks)
    outputs = tuple(int(lengths[i][1]) for i in picks)
    return RequestSample(tuple(arrivals.tolist()), prompts, outputs, name, seed)


def synthetic_lengths(mean_prompt: float, mean_output: float, n: int = 2000, seed: int = 0,
                      max_total: int = 2048) -> list[tuple[int, int]]:
    """Log-normal prompt/output lengths with the given means (sigma 0.8), capped so that
    prompt + output < ``max_total`` (for tests and runs without the data packages)."""
    rng = np.random.default_rng(seed)
    sigma = 0.8
    out = []
    while len(out) < n:
        p = int(rng.lognormal(np.log(mean_prompt) - sigma**2 / 2, sigma))
        o = int(rng.lognormal(np.log(mean_output) - sigma**2 / 2, sigma))
        if p >= 1 and o >= 1 and p + o < max_total:
            out.append((p, o))
    return out


def fixed_lengths(prompt: int, output: int) -> list[tuple[int, int]]:
    return [(prompt, output)]


def workload_lengths(name: str) -> list[tuple[int, int]]:
    """``(prompt, output)`` token counts of a ``dsbox.workloads`` workload (bundled
    tokenizer), or of ``synthetic:PROMPT:OUTPUT`` (log-normal with those means)."""
    if name.startswith("synthetic"):
        parts = name.split(":")
        try:
            mean_prompt, mean_output = float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ValueError(f"workload {name!r}: expected synthetic:PROMPT:OUTPUT") from None
        return synthetic_lengths(mean_prompt, mean_output)
    from dsbox.workloads import load_workload  # the data packages load only when needed

    requests = load_workload(name, with_text=False)
    return [(r.num_prompt_tokens, r.num_output_tokens) for r in requests]
