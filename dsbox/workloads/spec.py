"""Request specs, arrival processes and traces shared by the simulator and the benchmark.

A :class:`RequestSpec` is what a workload knows about one request before it runs: the
prompt (text optional), its token count and how many tokens to generate.
:func:`make_trace` gives a sample of them Poisson arrival times, as a
:class:`~dsbox.workloads.trace.Trace`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsbox.workloads.trace import Trace

__all__ = [
    "RequestSpec",
    "WorkloadStats",
    "make_trace",
    "poisson_arrivals",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload.

    ``num_prompt_tokens`` counts the prompt's tokens including OPT's BOS;
    ``num_output_tokens`` is the number of tokens to generate (the benchmark sets
    ``max_tokens`` to it and ignores EOS). ``prompt`` may be None when only lengths are
    needed (the simulator). ``source`` names where the request came from, for messages.
    """

    num_prompt_tokens: int
    num_output_tokens: int
    prompt: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.num_prompt_tokens < 1:
            raise ValueError(f"num_prompt_tokens must be >= 1, got {self.num_prompt_tokens}")
        if self.num_output_tokens < 1:
            raise ValueError(f"num_output_tokens must be >= 1, got {self.num_output_tokens}")

    @property
    def num_total_tokens(self) -> int:
        """Prompt plus output tokens: the positions the request occupies at its end."""
        return self.num_prompt_tokens + self.num_output_tokens

    def without_text(self) -> RequestSpec:
        """The same request with the prompt text dropped."""
        return RequestSpec(self.num_prompt_tokens, self.num_output_tokens, None, self.source)




@dataclass(frozen=True, slots=True)
class WorkloadStats:
    """Count and mean token lengths of a list of requests."""

    num_requests: int
    mean_prompt_tokens: float
    mean_output_tokens: float
    max_total_tokens: int


def summarize(requests: Sequence[RequestSpec]) -> WorkloadStats:
    """Count, mean prompt/output tokens and the longest prompt+output of ``requests``."""
    if not requests:
        raise ValueError("cannot summarize an empty workload")
    return WorkloadStats(
        num_requests=len(requests),
        mean_prompt_tokens=statistics.fmean(r.num_prompt_tokens for r in requests),
        mean_output_tokens=statistics.fmean(r.num_output_tokens for r in requests),
        max_total_tokens=max(r.num_total_tokens for r in requests),
    )


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> list[float]:
    """Arrival times (seconds, increasing) of ``n`` requests of a Poisson process.

    ``rate`` is in requests per second; gaps are exponential with mean ``1/rate`` and the
    first request arrives after one gap. ``rate = math.inf`` puts every arrival at 0 (a
    burst). The same ``seed`` gives the same times.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    if math.isinf(rate):
        return [0.0] * n
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.cumsum(gaps).tolist()


def make_trace(
    requests: Sequence[RequestSpec], rate: float, num_requests: int, seed: int = 0
) -> Trace:
    """Draw ``num_requests`` requests and give them Poisson arrivals at ``rate`` req/s.

    Requests are drawn at random without replacement when ``num_requests`` is at most the
    workload's size, with replacement otherwise. One ``seed`` fixes both the draw and the
    arrivals. Prompt texts are kept when the requests have them.
    """
    if not requests:
        raise ValueError("cannot make a trace from an empty workload")
    if num_requests < 0:
        raise ValueError(f"num_requests must be >= 0, got {num_requests}")
    rng = np.random.default_rng(seed)
    replace = num_requests > len(requests)
    picks = [requests[int(i)] for i in rng.choice(len(requests), size=num_requests,
                                                 replace=replace)]
    arrivals = poisson_arrivals(rate, num_requests, seed=int(rng.integers(2**31)))
    prompts = tuple(r.prompt for r in picks)
    return Trace(tuple(arrivals), tuple(r.num_prompt_tokens for r in picks),
                 tuple(r.num_output_tokens for r in picks),
                 prompts if any(p is not None for p in prompts) else None)
