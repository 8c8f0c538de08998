"""Routing and KV handoff rules: one piece of code for the runtime and the simulator.

A new request goes to the least loaded prefill (or colocated) instance; once prefilled, it
is offered to the least loaded decode instance, which pulls its KV when it has the blocks
(``DecodeScheduler.admit``); when the pull is done the decode side runs it and the prefill
side lets its blocks go. "Least loaded" is the fewest sequences held by the instance's
scheduler (queued, running, prefilled or being pulled), ties to the first instance in
placement order. The runtime's ``Engine`` and the simulator call these functions and
nothing else to decide, so one trace through both is routed the same way.

An instance here is anything with ``index`` (its position in the placement's expanded
instance list) and ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Sequence as SeqType
from typing import Protocol, TypeVar

from dsbox.engine.core.scheduler import DecodeScheduler, PrefillScheduler, Scheduler
from dsbox.engine.core.sequence import Sequence


class Routable(Protocol):
    index: int

    @property
    def scheduler(self) -> Scheduler: ...


R = TypeVar("R", bound=Routable)


def load_of(inst: Routable) -> int:
    """Sequences the instance holds."""
    return len(inst.scheduler.seqs)


def least_loaded(candidates: SeqType[R]) -> R:
    """The candidate holding the fewest sequences; ties go to the lowest index."""
    if not candidates:
        raise ValueError("no instance to route to")
    return min(candidates, key=lambda i: (len(i.scheduler.seqs), i.index))


def route_new(seq: Sequence, entries: SeqType[R], now: float) -> R:
    """Queue a new request at the least loaded prefill/colocated instance (``add`` may
    raise ValueError when it can never fit there)."""
    inst = least_loaded(entries)
    inst.scheduler.add(seq, now)
    seq.lifecycle.prefill_instance = inst.index
    if not isinstance(inst.scheduler, PrefillScheduler):  # colocated: decodes there too
        seq.lifecycle.decode_instance = inst.index
    return inst


def offer_to_decode(seq: Sequence, decoders: SeqType[R], now: float) -> R:
    """Offer a prefilled request to the least loaded decode instance; it pulls the KV
    when it has room (``admit``)."""
    dec = least_loaded(decoders)
    dec.scheduler.add_pending(seq, now)
    seq.lifecycle.decode_instance = dec.index
    return dec


def finish_handoff(seq_id: int, prefill: PrefillScheduler, decode: DecodeScheduler,
                   now: float) -> None:
    """The KV of ``seq_id`` arrived: the decode side runs it, the prefill side frees it."""
    decode.mark_pulled(seq_id, now)
    prefill.release(seq_id)
