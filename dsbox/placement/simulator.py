"""Discrete-event simulator of a placement, driving the engine's own scheduler classes.

Each simulated instance owns a real ``Scheduler`` (colocated), ``PrefillScheduler`` or
``DecodeScheduler`` with a real ``BlockManager``; the simulator calls ``schedule(now)``,
takes the step time from the latency model instead of running a model, and calls
``on_step_done`` at ``now + step_time``. So batching (FCFS to the prefill token budget),
decode batch caps, KV capacity, preemption and the lifecycle stamps are the engine's.

Flow of a request, by the runtime's own routing and handoff rules
(:mod:`dsbox.engine.core.routing`): arrival -> the least loaded prefill (or colocated)
instance -> prefill step(s) -> first token. Disaggregated: the prefilled sequence is
offered to the least loaded decode instance (``add_pending``); ``admit`` reserves its
blocks when there is room (pull-based), the KV transfer takes ``prompt KV bytes / link
bandwidth`` (a transfer over shared network links waits for the transfers before it on
those links), then ``mark_pulled`` on the decode side and ``release`` on the prefill side.
Decode steps follow until ``max_tokens``. Requests arriving at the same instant are all
queued before any step starts, as the runtime queues a batch it receives at once.

Where the profile has a KV pull cost (``kv_pull``, measured on the runtime's decode
workers), the KV that reached a decode instance is then copied in by the instance itself:
in stage 0's slot, after the step in flight and before the next one, one request after the
other (the runtime's worker takes its commands in order, so a step sent after a pull waits
for it, and the pulled sequence joins the step after). With no pull cost the sequence is
pulled as its transfer ends.

Instances sharing a machine's cores (a CPU box: the profile's ``interference``, 0 on GPUs)
slow each other: when a step of a PP-1 instance starts while another instance's step is in
flight, each runs ``interference`` (of its own step kind) times their overlap longer, the
one in flight by moving its end (its earlier ``STEP_DONE`` is then skipped).

Pipeline parallelism follows the runtime (``Instance.submit_steps``): an instance submits
its next step whenever its first stage is free, so several steps (micro-batches) are in
flight; each is the output of ``schedule(now, busy, cap)`` with ``busy`` the sequences of
the steps in flight and ``cap = decode_micro_batch_cap(num_running, pp, decoding)``
(prefill first, then a decode micro-batch of at most ``ceil(num_running / pp)`` sequences
that are not busy, and none while ``pp`` decode micro-batches are in flight: a round over
the running batch is ``pp`` micro-batches). A step occupies each of the ``pp`` stages in
turn for its share of the step time: ``prefill_time / pp`` for prefill, and for decode the
whole-model decode time of the micro-batch (the fit at pp = 1, coefficient set by the
micro-batch size) divided by ``pp``.
It leaves stage 0 after one stage time and, if no stage holds it up, ends after ``pp``.
With ``pp = 1`` this is one step at a time. The runtime's own cost of a step (the
profile's prefill or decode step overhead, by the step's kind) is paid in stage 0's slot
before the step's first stage.

With an SLO the simulator counts requests that meet / miss it as they happen and, with
``stop_early``, stops as soon as the attainment verdict is certain. A request counts as
missing its SLO as soon as that is certain, not only when it ends: once it has waited
past the TTFT target without a first token, or once its first token is more than
``TPOT target x (output tokens - 1)`` ago while it still runs (its TPOT can only be
larger), so an overloaded probe stops early.
"""

from __future__ import annotations

import heapq
from dataclasses import replace

from dsbox.config.slo import SLO
from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.routing import finish_handoff, offer_to_decode, route_new
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import (
    DecodeScheduler,
    Phase,
    PrefillScheduler,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
    decode_micro_batch_cap,
)
from dsbox.engine.core.sequence import Sequence, SequenceStatus
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.placement.lazy_decode import IDLE, LazyDecode
from dsbox.placement.sim_types import SimInstance, SimResult, SimSetup, SimTrace, required_met

_ARRIVAL, _STAGE_FREE, _STEP_DONE, _TRANSFER_DONE, _PULL_READY = range(5)


class _Instance:
    """Runtime state of one simulated instance."""

    __slots__ = ("index", "spec", "sched", "latency", "decode_latency", "pp", "stage_busy",
                 "num_in_flight", "num_decoding", "busy_ids", "stage_free", "lazy",
                 "role_index", "is_prefill", "is_decode", "pull_queue", "pays_pulls",
                 "done_id", "run_begin", "run_end", "run_k", "run_out", "k_prefill",
                 "k_decode")

    def __init__(self, index: int, role_index: int, spec: SimInstance, fast: bool) -> None:
        self.index = index
        self.role_index = role_index
        self.spec = spec
        cls = {"prefill": PrefillScheduler, "decode": DecodeScheduler,
               "colocated": Scheduler}[spec.role]
        config = SchedulerConfig(max_num_batched_tokens=spec.max_num_batched_tokens,
                                 max_num_seqs=spec.max_num_seqs)
        self.sched = cls(config, BlockManager(spec.num_blocks, spec.block_size))
        self.latency = spec.latency
        # the whole-model time of one decode micro-batch; a stage takes 1/pp of it
        self.decode_latency = replace(spec.latency, pp=1)
        self.pp = spec.latency.pp
        self.stage_busy = False        # stage 0 holds a step
        self.num_in_flight = 0         # steps not done yet
        self.num_decoding = 0          # decode steps (micro-batches) not done yet
        # sequences of the scheduler outputs in flight (pp > 1 only; those of lazy groups
        # in flight are the lazy path's own: see busy())
        self.busy_ids: set[int] = set()
        self.stage_free = [0.0] * self.pp
        self.lazy = LazyDecode(self.sched) if fast and spec.role != "prefill" else None
        self.is_prefill = spec.role == "prefill"
        self.is_decode = spec.role == "decode"
        self.pull_queue: list[Sequence] = []  # KV here, waiting for stage 0 to copy it in
        self.pays_pulls = self.is_decode and bool(spec.latency.pull_overhead.ms
                                                  or spec.latency.pull_overhead.ms_per_token)
        # interference (pp 1 only): the step in flight, its run and its STEP_DONE event
        self.k_prefill = spec.latency.prefill_overhead.interference
        self.k_decode = spec.latency.decode_overhead.interference
        self.done_id = None            # the heap counter of the valid STEP_DONE event
        self.run_begin = self.run_end = self.run_k = 0.0
        self.run_out = None

    @property
    def scheduler(self) -> Scheduler:  # what the routing rules read
        return self.sched

    def busy(self) -> set[int]:
        """Every sequence in a step in flight."""
        if self.lazy is None or not self.lazy.num_busy:
            return self.busy_ids
        return self.busy_ids | self.lazy.in_flight_ids()

    def decode_cap(self) -> int | None:
        """The runtime's cap on a decode micro-batch (None without PP)."""
        if self.pp == 1:
            return None
        return decode_micro_batch_cap(self.sched.num_running, self.pp, self.num_decoding)


class Simulator:
    """One run of ``trace`` on ``setup``. Use :func:`simulate`."""

    def __init__(self, setup: SimSetup, trace: SimTrace, slo: SLO | None = None,
                 stop_early: bool = False, fast: bool = True) -> None:
        if stop_early and slo is None:
            raise ValueError("stop_early needs an SLO")
        self.mode = setup.mode
        if self.mode == "prefill-only":
            longest = max(trace.prompt_lens, default=0) + 1
        else:
            longest = trace.max_total_tokens
        if longest > setup.min_kv_capacity():
            raise ValueError(f"a request of {longest} tokens does not fit the smallest KV "
                             f"pool ({setup.min_kv_capacity()} tokens)")
        self.setup = setup
        self.trace = trace
        self.slo = slo
        self.stop_early = stop_early
        counters = {"prefill": 0, "decode": 0, "colocated": 0}
        self.instances: list[_Instance] = []
        for i, spec in enumerate(setup.instances):
            self.instances.append(_Instance(i, counters[spec.role], spec, fast))
            counters[spec.role] += 1
        self.entry = [x for x in self.instances if x.spec.role != "decode"]
        self.decoders = [x for x in self.instances if x.spec.role == "decode"]
        n = len(trace)
        self.lifecycles: list[Lifecycle] = [Lifecycle(t) for t in trace.arrivals]
        self.seqs: dict[int, Sequence] = {}
        self.source: dict[int, _Instance] = {}  # seq id -> prefill instance holding its KV
        self.link_free: dict[int, float] = {}  # shared link id -> when it is free next
        self.heap: list = []
        self.counter = 0
        self.num_met = 0
        self.num_violated = 0
        self.flagged = bytearray(n)  # 1: already counted as violated
        self.num_steps = 0
        self.need_met = required_met(n, slo.attainment) if slo else 0
        self.stopped = False
        self.touched: set[_Instance] = set()  # instances given same-instant arrivals
        # (time, seq id, what): past ``time`` the request's SLO is missed if it still has
        # no first token (what 0) or is still running (what 1); only with stop_early
        self.deadlines: list[tuple[float, int, int]] = []
        self.doom = stop_early
        self.params: dict[int, SamplingParams] = {}  # output length -> its params
        # instances of PP 1 whose steps lengthen each other (a shared CPU); none on GPUs
        flat = [x for x in self.instances if x.pp == 1]
        self.sharing = (flat if len(flat) > 1 and any(x.k_prefill or x.k_decode for x in flat)
                        else [])

    # --- event queue ---------------------------------------------------------------------
    def _push(self, time: float, kind: int, a, b=None) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (time, self.counter, kind, a, b))

    def run(self) -> SimResult:
        trace = self.trace
        n = len(trace)
        if n:
            self._push(trace.arrivals[0], _ARRIVAL, 0)
        now = 0.0
        heap = self.heap
        deadlines = self.deadlines
        pop = heapq.heappop
        while heap and not self.stopped:
            now, count, kind, a, b = pop(heap)
            if deadlines and deadlines[0][0] < now:
                self._expire(now)
                if self.stopped:
                    break
            if kind == _ARRIVAL:
                if a + 1 < n:
                    self._push(trace.arrivals[a + 1], _ARRIVAL, a + 1)
                self._arrive(a, now)
            elif kind == _STEP_DONE:
                if a.done_id is not None and a.done_id != count:
                    continue  # rescheduled: the step ran longer beside another's
                self._step_done(a, b, now)
            elif kind == _STAGE_FREE:
                a.stage_busy = False
                self._try_start(a, now)
            elif kind == _PULL_READY:
                b.pull_queue.append(a)
                self._try_start(b, now)
            else:
                self._transfer_done(a, b, now)
        for inst in self.instances:
            if inst.lazy is not None:
                inst.lazy.materialize()
        return SimResult(self.lifecycles, self.slo, self.num_met, self.num_violated,
                         self.stopped, now, self.num_steps)

    # --- SLO bookkeeping -----------------------------------------------------------------
    def _violate(self, seq_id: int) -> None:
        if self.flagged[seq_id]:
            return
        self.flagged[seq_id] = 1
        self.num_violated += 1
        if self.stop_early and self.num_violated > len(self.trace) - self.need_met:
            self.stopped = True

    def _first_token(self, seq: Sequence) -> None:
        if self.slo is None:
            return
        lc = seq.lifecycle
        if lc.ttft > self.slo.ttft:
            self._violate(seq.seq_id)
        elif self.doom and self.mode != "prefill-only" and seq.params.max_tokens > 1:
            end = lc.token_times[0] + self.slo.tpot * (seq.params.max_tokens - 1)
            heapq.heappush(self.deadlines, (end, seq.seq_id, 1))

    def _expire(self, now: float) -> None:
        """Count the requests whose deadline passed before ``now`` unmet as violations."""
        deadlines = self.deadlines
        lifecycles = self.lifecycles
        while deadlines and deadlines[0][0] < now and not self.stopped:
            _, i, what = heapq.heappop(deadlines)
            lc = lifecycles[i]
            if (not lc.token_times) if what == 0 else lc.finish is None:
                self._violate(i)

    def _finished(self, seq: Sequence) -> None:
        """Judge a request at its end (phase-only runs judge their phase's metric only)."""
        self.seqs.pop(seq.seq_id, None)
        if self.slo is None or self.flagged[seq.seq_id]:
            return
        lc = seq.lifecycle
        late = ((self.mode != "prefill-only" and lc.tpot > self.slo.tpot)
                or (self.mode != "decode-only" and lc.ttft > self.slo.ttft))
        if late:
            self._violate(seq.seq_id)
            return
        self.num_met += 1
        if self.stop_early and self.num_met >= self.need_met:
            self.stopped = True

    # --- events --------------------------------------------------------------------------
    def _arrive(self, i: int, now: float) -> None:
        trace = self.trace
        max_tokens = trace.output_lens[i]
        params = self.params.get(max_tokens)
        if params is None:  # one per output length: nothing changes a request's params
            params = self.params[max_tokens] = SamplingParams(max_tokens=max_tokens,
                                                              ignore_eos=True)
        seq = Sequence(i, range(trace.prompt_lens[i]), params, self.lifecycles[i])
        self.seqs[i] = seq
        if self.mode == "decode-only":
            self._prefilled_at_arrival(seq, now)
            return
        if self.doom:
            heapq.heappush(self.deadlines, (now + self.slo.ttft, i, 0))
        inst = route_new(seq, self.entry, now)
        if i + 1 < len(trace) and trace.arrivals[i + 1] == now:
            self.touched.add(inst)  # the next request arrives now too: queue it first
            return
        if not self.touched:
            self._try_start(inst, now)
            return
        self.touched.add(inst)
        for other in sorted(self.touched, key=lambda x: x.index):  # as the runtime does
            self._try_start(other, now)
        self.touched.clear()

    def _try_start(self, inst: _Instance, now: float) -> None:
        """Start the next step if stage 0 is free (the runtime's rule)."""
        if inst.stage_busy:
            return
        if inst.pull_queue:
            self._run_pulls(inst, now)
        sched = inst.sched
        if inst.is_prefill:  # PrefillScheduler.schedule is its prefill step
            out = sched.schedule_prefill(now)
            if out is not None:
                self._start(inst, now, out)
            return
        lazy = inst.lazy
        if lazy is not None:
            # Scheduler.schedule() is "prefill if any fits, else decode"; the prefill half
            # reads only the waiting queue, the running count and the block manager, so
            # it runs on lazy state. It returns None without side effects.
            if sched.waiting:
                out = sched.schedule_prefill(now)
                if out is not None:
                    self._start(inst, now, out)
                    return
            group = lazy.try_start(now, inst.busy_ids, inst.decode_cap())
            if group is IDLE:
                return
            if group is not None:
                self._start(inst, now, group)
                return
            lazy.detach_idle()
        while True:
            out = sched.schedule(now, inst.busy(), inst.decode_cap())
            if out is None:
                return
            if out.seqs:
                break
            # a step that only preempted: the runtime asks again (with a new cap)
        self._start(inst, now, out)

    def _start(self, inst: _Instance, now: float, out) -> None:
        """Put ``out`` (a scheduler output or a lazy group) through the pipeline."""
        pp = inst.pp
        lat = inst.latency
        if out.__class__ is SchedulerOutput:
            context = sum(s.context_len for s in out.seqs)
            if out.phase is Phase.PREFILL:
                lens = [s.num_new_tokens for s in out.seqs]
                stage = lat.prefill_stage_time(sum(lens), sum(x * x for x in lens))
                overhead = lat.prefill_overhead_time(context, len(lens))
            else:
                stage = inst.decode_latency.decode_time(len(out.seqs), context) / pp
                overhead = lat.decode_overhead_time(context, len(out.seqs))
                inst.num_decoding += 1
            if pp > 1:
                inst.busy_ids.update([s.seq_id for s in out.seqs])
        else:  # a lazy group
            context = out.sum_context
            stage = inst.decode_latency.decode_time(out.batch_size, context) / pp
            overhead = lat.decode_overhead_time(context, out.batch_size)
            inst.num_decoding += 1
        free = inst.stage_free
        # the runtime's own cost of the step comes first, in stage 0's slot
        begin = max(now, free[0])  # after any KV pulls queued before it
        t = begin + overhead + stage
        if self.sharing and pp == 1:
            t = self._share(inst, out, begin, t)
        free[0] = t
        for s in range(1, pp):
            t = max(t, free[s]) + stage
            free[s] = t
        inst.stage_busy = True
        inst.num_in_flight += 1
        self.num_steps += 1
        if pp > 1:
            self._push(free[0], _STAGE_FREE, inst)
        self._push(t, _STEP_DONE, inst, out)
        if self.sharing and pp == 1:
            inst.done_id = self.counter

    def _share(self, inst: _Instance, out, begin: float, end: float) -> float:
        """A step of ``inst`` runs over ``[begin, end]`` beside the steps other instances
        have in flight: each lengthens by its kind's ``interference`` times the time the
        two overlap (the new one now; one in flight by rescheduling its end, and what is
        queued behind it). Returns the new step's end."""
        prefill = out.__class__ is SchedulerOutput and out.phase is Phase.PREFILL
        k = inst.k_prefill if prefill else inst.k_decode
        extra = 0.0
        for other in self.sharing:
            if other is inst or not other.num_in_flight or other.run_end <= begin:
                continue
            overlap = min(other.run_end, end) - max(other.run_begin, begin)
            if overlap <= 0:
                continue
            extra += k * overlap
            if other.run_k:
                longer = other.run_k * overlap
                other.run_end += longer
                other.stage_free[0] += longer
                self._push(other.run_end, _STEP_DONE, other, other.run_out)
                other.done_id = self.counter
        end += extra
        inst.run_begin, inst.run_end, inst.run_k, inst.run_out = begin, end, k, out
        return end

    def _run_pulls(self, inst: _Instance, now: float) -> None:
        """Stage 0 is free: copy in the KV that arrived, one request after the other, before
        the next step (a step sent now waits for them, as on the runtime's worker)."""
        lat = inst.latency
        t = max(now, inst.stage_free[0])
        for seq in inst.pull_queue:
            t += lat.pull_time(seq.num_prompt_tokens)
            self._push(t, _TRANSFER_DONE, seq, inst)
        inst.pull_queue.clear()
        inst.stage_free[0] = t

    def _step_done(self, inst: _Instance, out, now: float) -> None:
        inst.num_in_flight -= 1
        if inst.pp == 1:
            inst.stage_busy = False
        if out.__class__ is SchedulerOutput:
            if out.phase is Phase.DECODE:
                inst.num_decoding -= 1
            if inst.pp > 1:
                inst.busy_ids.difference_update([s.seq_id for s in out.seqs])
            finished = inst.sched.on_step_done(out, [0] * len(out.seqs), now)
            if out.phase is Phase.PREFILL:
                self._after_prefill(inst, out, now)
        else:
            inst.num_decoding -= 1
            finished = inst.lazy.complete(out, now)
        for seq in finished:
            self._finished(seq)
        if inst.is_decode and inst.sched.pending:
            self._admit(inst, now)
        if not inst.stage_busy:
            self._try_start(inst, now)

    def _after_prefill(self, inst: _Instance, out: SchedulerOutput, now: float) -> None:
        seqs = self.seqs
        role = inst.spec.role
        for s in out.seqs:
            seq = seqs.get(s.seq_id)
            if seq is None:
                continue
            if len(seq.lifecycle.token_times) == 1 and seq.num_computed_tokens == s.context_len:
                self._first_token(seq)
            if role == "prefill":
                if seq.status is not SequenceStatus.PREFILLED:
                    continue
                if self.mode == "prefill-only":
                    inst.sched.release(seq.seq_id)
                    seq.lifecycle.finish = now
                    self._finished(seq)
                else:
                    self._hand_off(inst, seq, now)

    def _prefilled_at_arrival(self, seq: Sequence, now: float) -> None:
        """Decode-only runs: the request arrives with its prompt's KV and first token."""
        lc = seq.lifecycle
        lc.prefill_queued = lc.prefill_start = lc.prefill_end = now
        seq.num_computed_tokens = seq.num_prompt_tokens
        seq.append_token(0, now)
        if seq.check_stop() is not None:
            lc.finish = now
            self._finished(seq)
            return
        self._first_token(seq)
        decode = offer_to_decode(seq, self.decoders, now)
        self._admit(decode, now)
        self._try_start(decode, now)

    def _hand_off(self, prefill: _Instance, seq: Sequence, now: float) -> None:
        self.source[seq.seq_id] = prefill
        decode = offer_to_decode(seq, self.decoders, now)
        self._admit(decode, now)
        self._try_start(decode, now)

    def _admit(self, decode: _Instance, now: float) -> None:
        if not decode.sched.pending:
            return
        admitted = decode.sched.admit(now)
        if not admitted:
            return
        per_token = self.setup.kv_bytes_per_token
        for seq in admitted:
            prefill = self.source.get(seq.seq_id)
            if prefill is None:  # decode-only: the KV is already there
                self._push(now, _TRANSFER_DONE, seq, decode)
                continue
            p, d = prefill.role_index, decode.role_index
            seconds = seq.num_prompt_tokens * per_token / self.setup.bandwidth[p][d]
            links = self.setup.links[p][d] if self.setup.links else ()
            if links:  # one transfer at a time on a shared link
                free = self.link_free
                start = max(now, *(free.get(k, 0.0) for k in links))
                for k in links:
                    free[k] = start + seconds
                seconds += start - now
            if decode.pays_pulls:  # then the decode worker copies it in, between steps
                self._push(now + seconds, _PULL_READY, seq, decode)
            else:
                self._push(now + seconds, _TRANSFER_DONE, seq, decode)

    def _transfer_done(self, seq: Sequence, decode: _Instance, now: float) -> None:
        prefill = self.source.pop(seq.seq_id, None)
        if prefill is None:  # decode-only: the KV was there at arrival
            decode.sched.mark_pulled(seq.seq_id, now)
        else:
            finish_handoff(seq.seq_id, prefill.sched, decode.sched, now)
            self._try_start(prefill, now)
        self._try_start(decode, now)


def simulate(setup: SimSetup, trace: SimTrace, slo: SLO | None = None, *,
             stop_early: bool = False, fast: bool = True) -> SimResult:
    """Simulate ``trace`` on ``setup``; ``fast=False`` drives every decode step through the
    scheduler (the reference the fast path is tested against)."""
    return Simulator(setup, trace, slo, stop_early, fast).run()
