"""Server-sent events that end their requests when the client goes away, and a wait that
does the same for non-streamed answers.

:class:`EventStream` sends each event as it comes and, at the same time, listens for the
client's disconnect (ASGI's ``http.disconnect``): when the client leaves, the event
iterator is closed at once (whether it was waiting for the engine or for the socket) and
``on_close`` runs, which aborts the job, so the engine frees the request's KV blocks even if
no token was due. :func:`until_disconnect` races an awaitable against the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.responses import Response

logger = logging.getLogger("dsbox")

T = TypeVar("T")


def event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


DONE = event("[DONE]")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(awaitable: Awaitable[T], receive: Callable[[], Awaitable[dict]]
                           ) -> T:
    """The awaitable's result, or ClientGone as soon as the client disconnects."""
    work = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise ClientGone()
    finally:
        for task in (work, gone):
            task.cancel()
        await asyncio.gather(work, gone, return_exceptions=True)


class EventStream(Response):
    """``text/event-stream`` from an async iterator of encoded events."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        # not Response.__init__: that would send a Content-Length of the empty body
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.events = events
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        work = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                task.cancel()
            results = await asyncio.gather(work, gone, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.events.aclose()
            self.on_close()
        failure = results[0]
        if isinstance(failure, Exception) and not isinstance(failure, OSError | ClientGone) \
                and type(failure).__name__ != "ClientDisconnect":
            logger.error("event stream failed: %r", failure, exc_info=failure)
