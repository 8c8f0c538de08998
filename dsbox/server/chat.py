"""``POST /v1/chat/completions``: a conversation rendered with the server's chat template
(the TUI's, or ``--chat-template FILE``), whose stop strings join the request's.

Roles: ``system`` (``developer`` is taken as system), ``user``, ``assistant``; content is
a string or a list of text parts. ``max_completion_tokens`` (or the older ``max_tokens``)
bounds a reply, else the context window does. ``logprobs: true`` with ``top_logprobs: N``
adds logprobs in chat's shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dsbox.server import answer
from dsbox.server.errors import bad_request
from dsbox.server.logprobs import chat_logprobs
from dsbox.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Delta,
    parse,
)
from dsbox.server.sampling import (
    check_context,
    check_model,
    check_unsupported,
    sampling_params,
    stops_of,
)
from dsbox.server.state import ServerState

_ROLE_ALIASES = {"developer": "system"}


def render(req: ChatCompletionRequest, state: ServerState) -> str:
    if not req.messages:
        raise bad_request("messages must not be empty", "messages")
    messages = [{"role": _ROLE_ALIASES.get(m.role, m.role), "content": m.text()}
                for m in req.messages]
    try:
        return state.chat_template.render(messages, add_generation_prompt=True)
    except ValueError as exc:
        raise bad_request(str(exc), "messages") from None


def _logprobs_n(req: ChatCompletionRequest) -> int | None:
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs set to true", "top_logprobs")
    return (req.top_logprobs or 0) if req.logprobs else None


async def create_chat_completion(request: Request, state: ServerState) -> Response:
    req = parse(ChatCompletionRequest, await request.body())
    check_model(req.model, state.model_name)
    check_unsupported(req)
    ids = state.client.tokenizer.encode(render(req, state))
    stops = list(dict.fromkeys(stops_of(req.stop) + list(state.chat_template.stop)))
    limit = req.max_completion_tokens if req.max_completion_tokens is not None \
        else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "messages"
    max_tokens = check_context(len(ids), limit, state.client.max_model_len, "messages", param)
    params = sampling_params(req, max_tokens, stops, _logprobs_n(req))
    job = state.job("chat")
    try:
        job.start([ids] * req.n, params)
    except ValueError as exc:
        raise bad_request(str(exc), "messages") from None
    reply = _Reply(req, state, len(ids))
    if req.stream:
        return await answer.streamed(job, request, reply.chunks)
    finals = await answer.whole(job, request)
    if finals is None:
        return answer.gone()
    return JSONResponse(reply.whole(finals).model_dump(mode="json"))


class _Reply:
    """Builds the response (or its chunks) of one chat request."""

    def __init__(self, req: ChatCompletionRequest, state: ServerState, prompt_len: int):
        self.req = req
        self.state = state
        self.prompt_len = prompt_len
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _logprobs(self, out, start_token: int):
        if not self.req.logprobs or out.logprobs is None:
            return None
        return chat_logprobs(self.state.client.tokenizer, out.token_ids[start_token:],
                             out.logprobs[start_token:])

    def whole(self, finals) -> ChatCompletionResponse:
        choices = [ChatChoice(index=i, message=AssistantMessage(content=o.text),
                              logprobs=self._logprobs(o, 0), finish_reason=o.finish_reason)
                   for i, o in enumerate(finals)]
        return ChatCompletionResponse(id=self.id, created=self.created,
                                      model=self.state.model_name, choices=choices,
                                      usage=answer.usage([self.prompt_len], finals))

    def _chunk(self, choices, usage=None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created,
                                   model=self.state.model_name, choices=choices, usage=usage)

    async def chunks(self, outputs: AsyncIterator[answer.Item]) -> AsyncIterator[bytes]:
        include_usage = bool(self.req.stream_options and self.req.stream_options.include_usage)
        encode = answer.ChunkEncoder(self._chunk([]), include_usage).choice
        sent_tokens: dict[int, int] = {}
        finals = {}
        async for index, out in outputs:
            if out.finish_reason == "error":
                yield answer.error_event(out)
                yield answer.DONE
                return
            if index not in sent_tokens:  # each choice opens with the role
                sent_tokens[index] = 0
                opening = ChatChunkChoice(index=index, delta=Delta(role="assistant", content=""))
                yield encode(opening)
            if not out.new_text and not out.finished:
                continue
            start = sent_tokens[index]
            sent_tokens[index] = len(out.token_ids)
            choice = ChatChunkChoice(index=index,
                                     delta=Delta(content=out.new_text or None),
                                     logprobs=self._logprobs(out, start),
                                     finish_reason=answer.finish_reason(out))
            if out.finished:
                finals[index] = out
            yield encode(choice)
        if include_usage:
            usage = answer.usage([self.prompt_len], [finals[i] for i in sorted(finals)])
            yield answer.event(self._chunk([], usage).model_dump_json())
        yield answer.DONE
