"""How a job's outputs become an HTTP answer, streamed or whole; shared by both endpoints.

A streamed answer starts (status 200) only once the first output is there, so a request
the engine fails before its first token (a dead instance) is still a plain 500; a failure
later in the stream is sent as an ``error`` event before ``[DONE]`` (what OpenAI's clients
raise on). A client that leaves, at any point, aborts the job.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from dsbox.engine.core.request_output import RequestOutput
from dsbox.server.errors import engine_failed
from dsbox.server.jobs import Job
from dsbox.server.protocol import Usage
from dsbox.server.sse import DONE, ClientGone, EventStream, event, until_disconnect

Item = tuple[int, RequestOutput]
ChunkMaker = Callable[[AsyncIterator[Item]], AsyncIterator[bytes]]


def gone() -> Response:
    """For a client that is no longer there (nginx's 499): nobody reads it."""
    return Response(status_code=499)


async def whole(job: Job, request: Request) -> list[RequestOutput] | None:
    """Every request's final output (None if the client left); 500 if the engine failed
    one of them. The job is closed either way."""
    try:
        finals = await until_disconnect(job.wait(), request.receive)
    except ClientGone:
        return None
    finally:
        job.close()
    for out in finals:
        if out.finish_reason == "error":
            raise engine_failed(out.error)
    return finals


async def streamed(job: Job, request: Request, chunks: ChunkMaker) -> Response:
    """An event stream of ``chunks(job.outputs())``, opened once the first output is
    there."""
    try:
        first = await until_disconnect(job.first(), request.receive)
    except ClientGone:
        job.close()
        return gone()
    except BaseException:
        job.close()
        raise
    if first.finish_reason == "error":
        job.close()
        raise engine_failed(first.error)
    return EventStream(chunks(job.outputs()), on_close=job.close)


class ChunkEncoder:
    """Stream chunks of one response as SSE events: the fields every chunk shares (id,
    object, created, model) are encoded once, each chunk adds its one choice."""

    def __init__(self, head: BaseModel, include_usage: bool) -> None:
        shared = head.model_dump_json(exclude={"choices", "usage"})
        self._prefix = b"data: " + shared[:-1].encode() + b',"choices":['
        self._suffix = b"]" + (b',"usage":null' if include_usage else b"") + b"}\n\n"

    def choice(self, choice: BaseModel) -> bytes:
        return self._prefix + choice.__pydantic_serializer__.to_json(choice) + self._suffix


def error_event(out: RequestOutput) -> bytes:
    return event(json.dumps(engine_failed(out.error).body()))


def finish_reason(out: RequestOutput) -> str | None:
    """OpenAI's finish reason: ``stop`` or ``length`` (None while running)."""
    return out.finish_reason if out.finished else None


def usage(prompt_lens: list[int], finals: list[RequestOutput]) -> Usage:
    """Prompt tokens counted once per prompt (not per choice), completion tokens of all."""
    p = sum(prompt_lens)
    c = sum(len(o.token_ids) for o in finals)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


__all__ = ["DONE", "ChunkEncoder", "error_event", "event", "finish_reason", "gone", "streamed",
           "usage", "whole"]
