"""What a bench replays: a workload drawn with Poisson arrivals, or a recorded trace.

``--workload sharegpt`` draws ``num_requests`` requests (lengths from the model's
tokenizer, prompt texts kept for real runs) and gives them Poisson arrivals with a seed.
Every rate sees the same requests in the same order and the same arrival pattern scaled to
the rate (common random numbers), so attainment against rate is not blurred by the draw.
``--trace PATH`` replays a recorded trace exactly (with ``--rates``: scaled to each rate).
Workload requests longer than the model's context (prompt + output > ``max_model_len``) are
left out of the draw, as DistServe leaves out ShareGPT requests past OPT's 2048 positions;
a recorded trace is replayed as it is (a request that does not fit is an error).

Each request generates exactly its output length (``ignore_eos``). A request with only a
length (a CSV trace) is sent as that many token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsbox.workloads import RequestSpec, Trace, load_workload, make_trace

SYNTHETIC_ID_BASE = 1000   # token ids of length-only prompts: BOS, then ids from here
SYNTHETIC_ID_SPAN = 20000


@dataclass(frozen=True, slots=True)
class BenchWorkload:
    """A workload or a recorded trace, and how many requests to draw from a workload."""

    name: str                          # workload name, or the trace file
    requests: tuple[RequestSpec, ...] = ()
    recorded: Trace | None = None
    num_requests: int = 100
    seed: int = 0
    num_left_out: int = 0              # workload requests longer than the model's context

    def __post_init__(self) -> None:
        if self.recorded is None and not self.requests:
            raise ValueError(f"workload {self.name!r} has no requests")
        if self.num_requests < 1:
            raise ValueError(f"num_requests must be >= 1, got {self.num_requests}")

    @property
    def is_recorded(self) -> bool:
        return self.recorded is not None

    def recorded_rate(self) -> float | None:
        """Mean rate of the recorded trace (requests/s), None for a burst at time 0."""
        trace = self.recorded
        if trace is None:
            return None
        return len(trace) / trace.arrivals[-1] if trace.arrivals[-1] > 0 else None

    def trace_at(self, rate: float | None) -> Trace:
        """The trace at ``rate`` requests/s (None: a recorded trace as recorded)."""
        if self.recorded is not None:
            own = self.recorded_rate()
            if rate is None or own is None:
                return self.recorded
            return self.recorded.scaled(rate / own)
        if rate is None:
            raise ValueError("a workload needs a rate (--rates)")
        return make_trace(self.requests, rate, self.num_requests, self.seed)


def load_bench_workload(workload: str | None, trace: Path | None, tokenizer, *,
                        num_requests: int = 100, seed: int = 0, with_text: bool = True,
                        max_model_len: int | None = None) -> BenchWorkload:
    """The workload (``load_workload`` with ``tokenizer``; requests past ``max_model_len``
    left out) or the recorded trace (JSONL prompts given as text are counted with
    ``tokenizer``). Raises ValueError (an unknown workload, a malformed trace, no request
    that fits) or MissingDataPackageError."""
    if trace is not None:
        return BenchWorkload(str(trace), recorded=Trace.read(trace, tokenizer),
                             num_requests=num_requests, seed=seed)
    name = workload or "sharegpt"
    every = load_workload(name, tokenizer, with_text=with_text)
    fits = tuple(r for r in every
                 if max_model_len is None or r.num_total_tokens <= max_model_len)
    if not fits:
        raise ValueError(f"no request of workload {name!r} fits the model's {max_model_len} "
                         "positions")
    return BenchWorkload(name, fits, num_requests=num_requests, seed=seed,
                         num_left_out=len(every) - len(fits))


def synthetic_prompt(length: int, index: int, bos: int, vocab_size: int) -> list[int]:
    """``length`` token ids (BOS first) standing for a prompt known only by its length."""
    span = max(1, min(SYNTHETIC_ID_SPAN, vocab_size - SYNTHETIC_ID_BASE))
    return [bos] + [SYNTHETIC_ID_BASE + (7919 * index + 104729 * k) % span
                    for k in range(1, length)]


def prompts_of(trace: Trace, bos: int, vocab_size: int) -> list[str | list[int]]:
    """Per request: its text when the trace has one, else synthetic token ids."""
    texts: Sequence[str | None] = trace.prompts or (None,) * len(trace)
    return [text if text else synthetic_prompt(n, i, bos, vocab_size)
            for i, (text, n) in enumerate(zip(texts, trace.prompt_lens, strict=True))]


def check_fits(trace: Trace, max_model_len: int) -> None:
    """ValueError naming the first request whose prompt + output exceed the model's limit."""
    for i, (p, o) in enumerate(zip(trace.prompt_lens, trace.output_lens, strict=True)):
        if p + o > max_model_len:
            raise ValueError(f"request {i} of the trace needs {p} + {o} = {p + o} positions; "
                             f"the model has {max_model_len} (--max-model-len)")
