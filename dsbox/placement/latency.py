"""Step times of one instance (TP x PP) from a profile's fit, in seconds.

Prefill: the whole model takes ``a + b*sum(l) + c*sum(l^2)`` (ms); with PP each of the ``pp``
stages takes an equal share, and a new batch can enter stage 0 as soon as it is free
(pipelining, as DistServe's simulator models it; no extra PP cost).

Decode with PP: the simulator runs decode like the runtime does (up to ``pp`` micro-batches
in flight, each of at most ``ceil(B / pp)`` sequences, each spending ``1/pp`` of its
whole-model decode time in every stage). ``decode_time`` is the steady-state value of that
rule, used by the capacity estimates: with ``g = min(pp, B)`` micro-batches a sequence's
token costs one round through the pipeline, ``a + (b*sum(ctx) + c*B) / g``; the small/large
coefficient set is chosen by the micro-batch size ``ceil(B / g)``. With ``pp = 1`` this is
the fit itself.

``prefill_overhead_time`` / ``decode_overhead_time`` are the serving runtime's own cost of
a prefill / decode step (the profile's ``step_overhead`` of that kind: a constant plus a
cost per token of context and one per sequence), paid before the step enters stage 0: the
simulator adds it to every step's stage-0 time. Their ``interference`` lengthens a step
while another instance's step runs beside it (see :mod:`dsbox.placement.simulator`).
``pull_time`` is a KV pull's time on the decode worker (the profile's ``kv_pull``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.placement.profile import LatencyProfile, StepFit, StepOverhead


@dataclass(frozen=True, slots=True)
class InstanceLatency:
    """Step-time model of one instance; every time in seconds."""

    tp: int
    pp: int
    fit: StepFit
    prefill_overhead: StepOverhead = StepOverhead()  # runtime cost per prefill step
    decode_overhead: StepOverhead = StepOverhead()   # ... per decode step
    pull_overhead: StepOverhead = StepOverhead()     # a KV pull's time on a decode worker

    def __post_init__(self) -> None:
        if self.tp < 1 or self.pp < 1:
            raise ValueError(f"tp and pp must be >= 1, got tp={self.tp} pp={self.pp}")

    @classmethod
    def from_profile(cls, profile: LatencyProfile, tp: int, pp: int,
                     engine: str | None = None) -> InstanceLatency:
        return cls(tp, pp, profile.fit(tp, engine), profile.prefill_overhead,
                   profile.decode_overhead, profile.pull_overhead)

    def prefill_overhead_time(self, sum_context: int, num_seqs: int = 1) -> float:
        """The runtime's own time for one prefill step of ``num_seqs`` sequences over
        ``sum_context`` tokens, s."""
        return self.prefill_overhead.seconds(sum_context, num_seqs)

    def decode_overhead_time(self, sum_context: int, num_seqs: int = 1) -> float:
        """The runtime's own time for one decode step of ``num_seqs`` sequences over
        ``sum_context`` tokens of context, s."""
        return self.decode_overhead.seconds(sum_context, num_seqs)

    def pull_time(self, num_tokens: int) -> float:
        """The decode worker's time to copy in the KV of a prompt of ``num_tokens``, s."""
        return self.pull_overhead.seconds(num_tokens)

    def prefill_time(self, sum_len: int, sum_len_sq: int) -> float:
        """Whole-model time of one prefill batch (all stages), seconds."""
        return self.fit.prefill_batch_ms(sum_len, sum_len_sq) * 1e-3

    def prefill_stage_time(self, sum_len: int, sum_len_sq: int) -> float:
        """Time one pipeline stage is busy with a prefill batch, seconds."""
        return self.prefill_time(sum_len, sum_len_sq) / self.pp

    def decode_time(self, batch_size: int, sum_context: int) -> float:
        """Time between two tokens of the sequences of a decode batch, seconds."""
        groups = min(self.pp, batch_size)
        micro = -(-batch_size // groups)
        fit = self.fit
        a, b, c = fit.decode_small if micro < fit.decode_threshold else fit.decode_large
        return (a + (b * sum_context + c * batch_size) / groups) * 1e-3

    def prefill_time_of(self, lengths) -> float:
        return self.prefill_time(sum(lengths), sum(x * x for x in lengths))
