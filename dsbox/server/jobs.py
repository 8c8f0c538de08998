"""The engine requests behind one HTTP request, and the bound on requests still waiting.

A :class:`Job` submits the requests of one API call at once (``n`` choices per prompt)
through the engine client and fans their outputs into one asyncio queue, in the order the
engine produces them; :meth:`Job.close` aborts whatever has not finished (a client that
left, an error), so no request outlives its caller and its KV blocks are freed.

Outputs cross from the engine's thread to the event loop through a :class:`Mailbox`: one
wake-up of the loop per batch of outputs (an engine step yields one output per running
request), not one per output.

A :class:`WaitingGate` counts the requests that have not produced their first token yet
(queued for prefill or in it) across the server; a job that would take it past its limit is
refused before anything is submitted (the server answers 429 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

from dsbox.client import EngineClient
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.server.errors import queue_full


class WaitingGate:
    """How many admitted requests have no token yet, bounded by ``limit`` (None: no bound)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"max_waiting must be >= 0, got {limit}")
        self.limit = limit
        self.num_waiting = 0
        self._lock = threading.Lock()

    def enter(self, n: int) -> None:
        """Count ``n`` more waiting requests, or raise the 429 APIError if that is too many."""
        with self._lock:
            if self.limit is not None and self.num_waiting + n > self.limit:
                raise queue_full(self.num_waiting, self.limit)
            self.num_waiting += n

    def leave(self, n: int = 1) -> None:
        with self._lock:
            self.num_waiting -= n


class Mailbox:
    """Delivers items from any thread into asyncio queues of one event loop, waking the
    loop once for everything posted until it runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue, object]] = []

    def post(self, queue: asyncio.Queue, item: object) -> None:
        with self._lock:
            self._items.append((queue, item))
            wake = len(self._items) == 1
        if wake and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


class Job:
    """Requests submitted together; outputs as ``(choice index, RequestOutput)``."""

    def __init__(self, client: EngineClient, gate: WaitingGate, mailbox: Mailbox,
                 tag: str) -> None:
        self.client = client
        self.gate = gate
        self.mailbox = mailbox
        self.tag = tag
        self.request_ids: list[int] = []
        self.finals: dict[int, RequestOutput] = {}      # by choice index
        self._index: dict[int, int] = {}                 # request id -> choice index
        self._queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self._first: RequestOutput | None = None
        self._lock = threading.Lock()
        self._started: set[int] = set()                  # ids that left the gate
        self._num_entered = 0
        self._closed = False

    def start(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams]) -> None:
        """Submit one request per (prompt, params); ValueError (nothing queued) for bad
        input, the gate's 429 APIError when too many requests wait already."""
        self.gate.enter(len(prompts))
        self._num_entered = len(prompts)
        try:
            ids = self.client.submit_batch(list(prompts), list(params), self._on_output,
                                           tag=self.tag)
        except BaseException:
            self._num_entered = 0
            self.gate.leave(len(prompts))
            raise
        self.request_ids = ids
        self._index = {rid: i for i, rid in enumerate(ids)}

    def _on_output(self, out: RequestOutput) -> None:
        """From the engine's thread: leave the gate at the first output, hand it over."""
        rid = out.request_id
        with self._lock:
            first = rid not in self._started and not self._closed
            if first:
                self._started.add(rid)
        if first:
            self.gate.leave(1)
        self.mailbox.post(self._queue, out)

    @property
    def done(self) -> bool:
        return len(self.finals) == len(self.request_ids)

    async def first(self) -> RequestOutput:
        """The first output of any of the requests (also the first of :meth:`outputs`)."""
        if self._first is None:
            self._first = await self._queue.get()
        return self._first

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Every output of every request, as the engine produces them, until all ended."""
        queue, index_of, finals = self._queue, self._index, self.finals
        pending, self._first = self._first, None
        while len(finals) < len(index_of):
            out = pending if pending is not None else await queue.get()
            pending = None
            index = index_of[out.request_id]
            if out.finished:
                finals[index] = out
            yield index, out

    async def wait(self) -> list[RequestOutput]:
        """The final output of every request, in choice order."""
        async for _ in self.outputs():
            pass
        return [self.finals[i] for i in range(len(self.request_ids))]

    def close(self) -> None:
        """Abort every request not finished yet; release its place in the gate."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            unstarted = self._num_entered - len(self._started)
        if unstarted:
            self.gate.leave(unstarted)
        for i, rid in enumerate(self.request_ids):
            if i not in self.finals:
                self.client.abort(rid)
