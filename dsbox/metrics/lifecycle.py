"""Request lifecycle stamps and the metrics derived from them.

One source of truth: the engine (real clock), the simulator (simulated clock), the
dashboard and the bench all write and read these same stamps. Times are seconds on one
clock per run (``time.monotonic()`` in the engine, simulated seconds in the simulator).

Order of the stamps: arrival, prefill_queued, prefill_start, prefill_end; then the request
is offered to a decode instance (decode_queued), whose pull runs transfer_start..transfer_end;
decode_start is its first decode step. Decode queueing is the wait around the transfer
(offered but not pulled, pulled but not yet stepped). Colocated runs have no transfer: all of
decode_queued, transfer_start and transfer_end equal ``prefill_end``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class StageBreakdown:
    """The five stages of one request's latency, seconds."""

    prefill_queueing: float
    prefill_execution: float
    transfer: float
    decode_queueing: float
    decode_execution: float

    def total(self) -> float:
        return (self.prefill_queueing + self.prefill_execution + self.transfer
                + self.decode_queueing + self.decode_execution)


@dataclass(slots=True)
class Lifecycle:
    """Stamps of one request. ``None`` means the stage has not happened (yet)."""

    arrival: float
    prefill_queued: float | None = None
    prefill_start: float | None = None
    prefill_end: float | None = None
    transfer_start: float | None = None
    transfer_end: float | None = None
    decode_queued: float | None = None
    decode_start: float | None = None
    token_times: list[float] = field(default_factory=list)
    finish: float | None = None
    num_preemptions: int = 0
    prefill_instance: int | None = None  # index (in the placement) of the instance that
    decode_instance: int | None = None   # prefilled / decoded it; the same when colocated

    @property
    def ttft(self) -> float | None:
        """Time to first token, seconds (arrival to first generated token)."""
        return self.token_times[0] - self.arrival if self.token_times else None

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first, seconds (0 for one token)."""
        n = len(self.token_times)
        if n == 0:
            return None
        if n == 1:
            return 0.0
        return (self.token_times[-1] - self.token_times[0]) / (n - 1)

    @property
    def latency(self) -> float | None:
        """End-to-end latency, seconds (arrival to finish)."""
        return None if self.finish is None else self.finish - self.arrival

    @property
    def queue_time(self) -> float | None:
        """Seconds waiting before the first prefill step (vLLM's queue time)."""
        if self.prefill_start is None:
            return None
        return self.prefill_start - (self.prefill_queued if self.prefill_queued is not None
                                     else self.arrival)

    @property
    def transfer_time(self) -> float | None:
        """Seconds the KV handoff took (0 when colocated); None if there was none yet."""
        if self.transfer_start is None or self.transfer_end is None:
            return None
        return self.transfer_end - self.transfer_start

    def inter_token_latencies(self) -> list[float]:
        """Gaps between consecutive generated tokens, seconds."""
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    def meets(self, ttft_slo: float, tpot_slo: float) -> bool:
        """Whether the request met both SLOs (a request with no token meets neither)."""
        ttft, tpot = self.ttft, self.tpot
        return ttft is not None and ttft <= ttft_slo and tpot is not None and tpot <= tpot_slo

    def breakdown(self) -> StageBreakdown | None:
        """Five-stage breakdown; None until the request has finished decoding."""
        needed = (self.prefill_queued, self.prefill_start, self.prefill_end,
                  self.transfer_start, self.transfer_end, self.decode_queued,
                  self.decode_start, self.finish)
        if any(t is None for t in needed):
            return None
        return StageBreakdown(
            prefill_queueing=self.prefill_start - self.prefill_queued,
            prefill_execution=self.prefill_end - self.prefill_start,
            transfer=self.transfer_end - self.transfer_start,
            decode_queueing=(self.decode_start - self.decode_queued)
            - (self.transfer_end - self.transfer_start),
            decode_execution=self.finish - self.decode_start,
        )
