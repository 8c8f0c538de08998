"""LoadGenerator: replay a workload's prompts into an engine at a Poisson rate that can
change while it runs (the dashboard's load, a soak test, a benchmark).

::

    gen = LoadGenerator(client, load_workload("sharegpt"), rate=2.0)   # requests/s
    gen.start()
    gen.set_rate(5.0)           # takes effect at once (Poisson gaps are memoryless)
    gen.status()                # submitted, finished, in flight, dropped, failed
    gen.stop()                  # stops submitting; abort=True also ends those in flight

It only uses the engine client's public interface: each request is ``client.submit(prompt,
SamplingParams(max_tokens=<the workload's output length>, ignore_eos=True), ..., tag=...)``
(tag ``"load"`` by default, so reports and the dashboard can tell load from chat). Prompts
longer than the model allows are cut to fit and output lengths clipped to what is left of
``max_model_len``. At most ``max_in_flight`` requests are outstanding: an arrival beyond that
is dropped and counted, so an overloaded engine cannot make the generator hold unbounded
state. No textual or UI import: usable on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.workloads.spec import RequestSpec

DEFAULT_MAX_IN_FLIGHT = 256


@dataclass(frozen=True, slots=True)
class LoadStatus:
    """Counters of a load generator at one moment (requests since it was made)."""

    running: bool
    rate: float             # requests/s asked for now (0: paused)
    submitted: int
    finished: int
    in_flight: int
    dropped: int            # arrivals skipped because max_in_flight were outstanding
    failed: int             # rejected at submission (ValueError) or ended with an error


class LoadGenerator:
    """Submits ``requests`` (cycled in a seeded random order) with exponential gaps."""

    def __init__(self, client, requests: Sequence[RequestSpec], *, rate: float = 1.0,
                 seed: int = 0, tag: str = "load",
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        usable = [r for r in requests if r.prompt]
        if not usable:
            raise ValueError("the load generator needs requests with prompt text")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._client = client
        self._requests = usable
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(usable))
        self._next = 0
        self.tag = tag
        self.max_in_flight = max_in_flight
        self._check_rate(rate)
        self._rate = float(rate)
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._in_flight: set[int] = set()
        self._submitted = self._finished = self._dropped = self._failed = 0

    # --- control ------------------------------------------------------------------------
    @staticmethod
    def _check_rate(rate: float) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate >= 0):
            raise ValueError(f"load rate must be a finite number >= 0 requests/s, got {rate!r}")

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Requests per second from now on (0 pauses)."""
        self._check_rate(rate)
        with self._cv:
            self._rate = float(rate)
            self._cv.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start submitting (a thread of its own). Starting a running generator is a no-op."""
        if self.running:
            return
        with self._cv:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dsbox-load", daemon=True)
        self._thread.start()

    def stop(self, *, abort: bool = False, timeout: float = 5.0) -> None:
        """Stop submitting; with ``abort`` also end the requests still in flight."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if abort:
            with self._cv:
                ids = list(self._in_flight)
            for rid in ids:
                try:
                    self._client.abort(rid)
                except Exception:  # the engine may be closed already
                    pass

    def status(self) -> LoadStatus:
        with self._cv:
            return LoadStatus(self.running, self._rate, self._submitted, self._finished,
                              len(self._in_flight), self._dropped, self._failed)

    # --- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and self._rate <= 0:
                    self._cv.wait()
                if self._stopping:
                    return
                rate = self._rate
                gap = float(self._rng.exponential(1.0 / rate))
                deadline = time.monotonic() + gap
                # a rate change ends the wait: the next gap is drawn at the new rate
                # (exponential gaps are memoryless, so the process stays Poisson)
                while not self._stopping and self._rate == rate:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if self._stopping:
                    return
                if self._rate != rate:
                    continue
                if len(self._in_flight) >= self.max_in_flight:
                    self._dropped += 1
                    continue
            self._submit_one()

    def _pick(self) -> RequestSpec:
        if self._next == len(self._order):
            self._order = self._rng.permutation(len(self._requests))
            self._next = 0
        spec = self._requests[int(self._order[self._next])]
        self._next += 1
        return spec

    def _submit_one(self) -> None:
        spec = self._pick()
        limit = self._client.max_model_len
        ids = self._client.tokenizer.encode(spec.prompt)
        if len(ids) > limit // 2:  # leave room to generate
            ids = ids[:limit // 2]
        params = SamplingParams(max_tokens=max(1, min(spec.num_output_tokens,
                                                      limit - len(ids))),
                                ignore_eos=True)
        with self._cv:  # the callback may fire before submit returns: it waits for the id
            try:
                rid = self._client.submit(ids, params, self._on_output, tag=self.tag)
            except (ValueError, RuntimeError):
                self._failed += 1
                return
            self._submitted += 1
            self._in_flight.add(rid)

    def _on_output(self, out) -> None:
        if not out.finished:
            return
        with self._cv:
            self._finished += 1
            if out.finish_reason == "error":
                self._failed += 1
            self._in_flight.discard(out.request_id)
