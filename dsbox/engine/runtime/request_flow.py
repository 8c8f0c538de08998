"""RequestFlow: every live request's way through the instances, and what is kept of it.

The engine's loop thread owns it. It routes a new request to a prefill (or colocated)
instance, offers a prefilled one to a decode instance and starts the KV pull when that has
room (:mod:`dsbox.engine.core.routing`'s rules, shared with the simulator), takes in step
and pull results, ends requests (finish, abort, failure) in every instance that holds them,
and hands each output to its caller. The per-request maps here are emptied when a request
ends; what stays is its :class:`RequestRecord` in a bounded log and the engine's counters.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass

from dsbox.client.base import OutputCallback
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.request_tracker import RequestTracker
from dsbox.engine.core.routing import finish_handoff, offer_to_decode, route_new
from dsbox.engine.core.scheduler import Phase
from dsbox.engine.core.sequence import FinishReason
from dsbox.engine.core.sequence import Sequence as Seq
from dsbox.engine.runtime.instance import Instance
from dsbox.engine.runtime.messages import PullDone, StepDone
from dsbox.metrics.cursor_log import CursorLog
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.steps import PullRecord

logger = logging.getLogger("dsbox")
FINISHED_LOG_SIZE = 10_000


@dataclass(slots=True)
class _Pull:
    seq: Seq
    src: Instance
    dst: Instance
    acks_left: int
    sent: float
    nbytes: int = 0
    start: float = float("inf")  # the workers' earliest start and latest end of the copy
    end: float = 0.0


class RequestFlow:
    """Requests through ``instances`` (loop thread only, but for :meth:`finished_since`)."""

    def __init__(self, instances: list[Instance], tracker: RequestTracker) -> None:
        self.instances = instances
        self.tracker = tracker
        self.pull_ids = itertools.count()
        # per request, each emptied when the request ends
        self.callbacks: dict[int, OutputCallback] = {}
        self.home: dict[int, list[Instance]] = {}  # instances holding each request
        self.pulls: dict[int, _Pull] = {}
        self.tags: dict[int, str] = {}
        self.kv_bytes: dict[int, int] = {}
        # counters and the finished log
        self.num_requests = 0
        self.finished_counts: Counter[str] = Counter()
        self.aborted_at: Counter[str] = Counter()  # by the stage the request was in
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished_log: CursorLog[RequestRecord] = CursorLog(FINISHED_LOG_SIZE)

    def abort(self, sid: int, now: float) -> None:
        if sid in self.tracker:
            self.aborted_at[self.stage_of(sid)] += 1
        self.end(sid, FinishReason.ABORT, now)

    def fail_all(self, message: str) -> None:
        for sid in list(self.tracker.requests):
            self.fail(sid, message)

    def finished_since(self, cursor: int) -> tuple[list[RequestRecord], int]:
        return self.finished_log.since(cursor)

    def state_sizes(self) -> dict[str, int]:
        return {"tracker": len(self.tracker), "callbacks": len(self.callbacks),
                "home": len(self.home), "pulls": len(self.pulls), "tags": len(self.tags),
                "kv_bytes": len(self.kv_bytes)}

    def add(self, seq: Seq, text: str | None, cb: OutputCallback, tag: str,
             now: float) -> None:
        self.num_requests += 1
        self.tracker.add(seq, text)
        self.callbacks[seq.seq_id] = cb
        self.tags[seq.seq_id] = tag
        entry = [i for i in self.instances if i.role != "decode" and i.healthy]
        if not entry:
            self.fail(seq.seq_id, "no healthy prefill instance")
            return
        try:
            inst = route_new(seq, entry, now)
        except ValueError as exc:
            self.fail(seq.seq_id, str(exc))
            return
        self.home[seq.seq_id] = [inst]

    def admit_pulls(self, dec: Instance, now: float) -> None:
        for seq in dec.scheduler.admit(now):
            src = self.home[seq.seq_id][0]
            if not src.healthy:
                self.fail(seq.seq_id, f"{src.name} failed")
                continue
            pid = next(self.pull_ids)
            self.pulls[pid] = _Pull(seq, src, dec, len(dec.devices), now)
            dec.pull(pid, src, seq.seq_id)

    def step_done(self, inst: Instance, msg: StepDone, now: float) -> None:
        out = inst.in_flight.pop(msg.step_id, None)
        if out is None or not inst.healthy:
            return
        if inst.pp == 1:
            inst.stage0_done()
        is_prefill = out.phase is Phase.PREFILL
        seqs = inst.scheduler.seqs
        first = [s.seq_id for s in out.seqs
                 if is_prefill and (seq := seqs.get(s.seq_id)) is not None
                 and seq.num_output_tokens == 0]
        finished = inst.scheduler.on_step_done(out, msg.token_ids, now, msg.logprobs)
        self.generation_tokens += len(out.seqs)
        for sid in first:
            self.prompt_tokens += self.tracker.requests[sid].seq.num_prompt_tokens
        for seq in finished:
            inst.encoder.forget(seq.seq_id)
        for s in out.seqs:
            self._advance(s.seq_id, now)
            if is_prefill and inst.role == "prefill":
                self._offer_to_decode(s.seq_id, now)

    def _offer_to_decode(self, sid: int, now: float) -> None:
        req = self.tracker.requests.get(sid)
        if req is None or req.seq.is_finished:  # finished at its first token
            return
        decoders = [i for i in self.instances if i.role == "decode" and i.healthy]
        if not decoders:
            self.fail(sid, "no healthy decode instance")
            return
        try:
            dec = offer_to_decode(req.seq, decoders, now)
        except ValueError as exc:
            self.fail(sid, str(exc))
            return
        self.home[sid].append(dec)

    def pull_done(self, msg: PullDone, now: float) -> PullRecord | None:
        """Take in one worker's answer to a pull; the record of the pull once every worker
        of the decode instance has answered."""
        pull = self.pulls.get(msg.pull_id)
        if pull is None:
            return None
        pull.acks_left -= 1
        pull.nbytes += msg.nbytes
        pull.start = min(pull.start, msg.start)
        pull.end = max(pull.end, msg.end)
        sid = pull.seq.seq_id
        pull.dst.count_transfer(msg.nbytes, now, incoming=True)
        pull.src.count_transfer(msg.nbytes, now, incoming=False)
        if sid in self.kv_bytes or sid in self.tracker:
            self.kv_bytes[sid] = self.kv_bytes.get(sid, 0) + msg.nbytes
        if pull.acks_left:
            return None
        del self.pulls[msg.pull_id]
        record = PullRecord(pull.dst.index, pull.src.index, pull.seq.num_prompt_tokens,
                            pull.nbytes, pull.sent, pull.start, pull.end)
        if sid not in self.home:  # ended during the transfer
            self.kv_bytes.pop(sid, None)
            return record
        finish_handoff(sid, pull.src.scheduler, pull.dst.scheduler, now)
        pull.src.release(sid)
        self.home[sid] = [pull.dst]
        return record

    def _advance(self, sid: int, now: float) -> None:
        out = self.tracker.advance(sid, now, lambda rid, reason: self.end(rid, reason, now,
                                                                            notify=False))
        if out is not None:
            self._emit(out)

    def stage_of(self, sid: int) -> str:
        """Where a live request is: queued, prefill (in a step), prefilled (waiting to be
        pulled), transfer, decode."""
        seq = self.tracker.requests[sid].seq
        if any(p.seq is seq for p in self.pulls.values()):
            return "transfer"
        status = seq.status.value
        if status == "waiting":
            busy = any(sid in h.busy_seq_ids() for h in self.home.get(sid, ()))
            return "prefill" if busy else "queued"
        if status in ("prefilled", "pending_pull"):
            return "prefilled"
        return "decode"

    def end(self, sid: int, reason: FinishReason, now: float, notify: bool = True) -> None:
        """End a request in every instance that holds it (frees its blocks everywhere)."""
        for inst in self.home.get(sid, ()):
            inst.finish(sid, reason, now)
        if notify and sid in self.tracker:
            seq = self.tracker.requests[sid].seq
            if not seq.is_finished:  # never reached a scheduler
                seq.status = seq.status.FINISHED
                seq.finish_reason = reason
                seq.lifecycle.finish = now
            self._emit(self.tracker.output(sid))

    def fail(self, sid: int, message: str) -> None:
        if sid not in self.tracker:
            return
        self.tracker.fail(sid, message)
        self.end(sid, FinishReason.ERROR, time.monotonic())

    def _emit(self, out: RequestOutput) -> None:
        """Hand an output to its caller; a final one also ends the request's state."""
        sid = out.request_id
        cb = self.callbacks.get(sid)
        if out.finished:
            self._forget_request(out)
        if cb is not None:
            try:
                cb(out)
            except Exception as exc:  # a caller's callback must never stop the loop
                logger.warning("output callback of request %d failed: %r", sid, exc)

    def _forget_request(self, out: RequestOutput) -> None:
        sid = out.request_id
        self.callbacks.pop(sid, None)
        for inst in self.home.pop(sid, ()):
            inst.finish(sid, FinishReason(out.finish_reason), out.lifecycle.finish or 0.0)
        reason = out.finish_reason or "error"
        self.finished_counts[reason] += 1
        record = RequestRecord(sid, len(out.prompt_token_ids), len(out.token_ids), reason,
                               out.lifecycle, self.tags.pop(sid, ""),
                               self.kv_bytes.pop(sid, 0), out.error)
        self.finished_log.append(record)

    def fail_instance(self, inst: Instance, message: str) -> None:
        if not inst.healthy:
            return
        inst.healthy = False
        inst.error = message
        inst.in_flight.clear()
        inst.step_starts.clear()
        victims = [sid for sid, homes in self.home.items() if inst in homes]
        for pid, pull in list(self.pulls.items()):
            if inst in (pull.src, pull.dst):
                del self.pulls[pid]
                victims.append(pull.seq.seq_id)
        for sid in dict.fromkeys(victims):
            self.fail(sid, f"{inst.name} unhealthy: {message.splitlines()[0]}")
        inst.encoder.clear()  # the forgets it queued would never be sent
        inst.executor.kill()  # peers may be stuck in a collective with the dead one
