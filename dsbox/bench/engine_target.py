"""The engine on this box as a bench target, through the engine client only.

Each request is submitted at its arrival time (the submitting thread sleeps until then) with
``arrival=`` that time, so a submission that runs late never hides queueing: TTFT counts from
when the request was due. Prompts are tokenized before the run starts, ``max_tokens`` is the
request's output length and EOS is ignored, so every request generates exactly its length.
The records are read from the client's finished-request log, and the steps and KV pulls
the engine ran meanwhile from its step and pull logs (``last_steps``, ``last_pulls``: how
fast the machine ran, against a profile, :mod:`dsbox.bench.step_speed`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from dsbox.bench.targets import REAL, Progress, shifted
from dsbox.bench.workload import check_fits, prompts_of
from dsbox.client import EngineClient
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.steps import PullRecord, StepRecord
from dsbox.workloads import Trace

LEAD_S = 0.05        # the first arrival is this far after the run starts
STALL_S = 600.0      # no request finishing for this long ends the run (the rest: errors)
TAG = "bench"


class EngineTarget:
    """Replays traces on an open engine client (one placement)."""

    kind = REAL

    def __init__(self, client: EngineClient, placement: str) -> None:
        self.client = client
        self.placement = placement
        self.num_gpus = client.placement.num_devices
        self._cursor = client.finished_since(0)[1]
        self.last_steps: list[StepRecord] = []  # what the engine logged during the last run
        self.last_pulls: list[PullRecord] = []
        # instance id -> TP of the instances whose steps compare with a profile's (PP 1)
        self.tp_of = {i.instance_id: i.tp for i in client.stats().instances if i.pp == 1}

    def _encode(self, trace: Trace) -> list[list[int]]:
        tok = self.client.tokenizer
        prompts = prompts_of(trace, self.client.spec.bos_token_id, self.client.spec.vocab_size)
        return [tok.encode(p) if isinstance(p, str) else p for p in prompts]

    def run(self, trace: Trace, progress: Progress) -> list[RequestRecord]:
        client = self.client
        check_fits(trace, client.max_model_len)
        prompts = self._encode(trace)
        params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
                  for n in trace.output_lens]
        n = len(trace)
        lock = threading.Lock()
        finished = threading.Event()
        state = {"done": 0, "last": time.monotonic()}

        def on_output(out: RequestOutput) -> None:  # the engine's thread: never blocks
            if not out.finished:
                return
            with lock:
                state["done"] += 1
                state["last"] = time.monotonic()
                done = state["done"]
            progress(done)
            if done == n:
                finished.set()

        index: dict[int, int] = {}
        _, step_cursor = client.steps_since(0)
        _, pull_cursor = client.pulls_since(0)
        start = time.monotonic() + LEAD_S
        for i, (prompt, sp) in enumerate(zip(prompts, params, strict=True)):
            due = start + trace.arrivals[i]
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            index[client.submit(prompt, sp, on_output, arrival=due, tag=TAG)] = i
        while not finished.wait(1.0):
            if time.monotonic() - state["last"] > STALL_S:
                for rid in index:
                    client.abort(rid)
                finished.wait(30.0)
                break
        records, self._cursor = client.finished_since(self._cursor)
        self.last_steps, _ = client.steps_since(step_cursor)
        self.last_pulls, _ = client.pulls_since(pull_cursor)
        out: list[RequestRecord | None] = [None] * n
        for rec in records:
            i = index.get(rec.request_id)
            if i is not None and rec.tag == TAG:
                if rec.finish_reason == "abort":  # ended by the stall guard: a failure
                    rec = replace(rec, finish_reason="error",
                                  error=f"no request finished for {STALL_S:.0f} s")
                out[i] = shifted(rec, start, i)
        missing = [i for i, r in enumerate(out) if r is None]
        if missing:
            raise RuntimeError(f"{len(missing)} requests missing from the engine's finished "
                               "log (it keeps the last few thousand)")
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()
