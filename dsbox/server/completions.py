"""``POST /v1/completions``: text (or token ids) in, ``n`` completions per prompt out.

``prompt`` is a string, a list of strings, a list of token ids or a list of such lists;
choices are ordered by prompt, then by choice (``index = prompt * n + choice``), as
OpenAI does. ``logprobs: N`` adds each token's logprob and the top N (N <= 20).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dsbox.server import answer
from dsbox.server.errors import bad_request
from dsbox.server.logprobs import completion_logprobs
from dsbox.server.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
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


def prompt_ids(prompt, state: ServerState) -> list[list[int]]:
    """Token ids of each prompt; text is tokenized as the engine would (BOS first)."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise bad_request("prompt is empty", "prompt")
    out = []
    for p in prompt:
        if not p:
            raise bad_request("prompt is empty", "prompt")
        out.append(state.client.tokenizer.encode(p) if isinstance(p, str) else list(p))
    return out


async def create_completion(request: Request, state: ServerState) -> Response:
    req = parse(CompletionRequest, await request.body())
    check_model(req.model, state.model_name)
    check_unsupported(req)
    stops = stops_of(req.stop)
    prompts = prompt_ids(req.prompt, state)
    all_prompts, all_params = [], []
    for ids in prompts:
        max_tokens = check_context(len(ids), req.max_tokens, state.client.max_model_len,
                                   "prompt", "prompt")
        all_prompts += [ids] * req.n
        all_params += sampling_params(req, max_tokens, stops, req.logprobs)
    job = state.job("completions")
    try:
        job.start(all_prompts, all_params)
    except ValueError as exc:
        raise bad_request(str(exc), "prompt") from None
    reply = _Reply(req, state, [len(p) for p in prompts])
    if req.stream:
        return await answer.streamed(job, request, reply.chunks)
    finals = await answer.whole(job, request)
    if finals is None:
        return answer.gone()
    return JSONResponse(reply.whole(finals).model_dump(mode="json"))


class _Reply:
    """Builds the response (or its chunks) of one completion request."""

    def __init__(self, req: CompletionRequest, state: ServerState, prompt_lens: list[int]):
        self.req = req
        self.state = state
        self.prompt_lens = prompt_lens
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _logprobs(self, out, start_token: int, offset: int):
        if self.req.logprobs is None or out.logprobs is None:
            return None
        return completion_logprobs(self.state.client.tokenizer, out.token_ids[start_token:],
                                   out.logprobs[start_token:], offset)

    def _response(self, choices, usage=None) -> CompletionResponse:
        return CompletionResponse(id=self.id, created=self.created,
                                  model=self.state.model_name, choices=choices, usage=usage)

    def whole(self, finals) -> CompletionResponse:
        choices = [CompletionChoice(index=i, text=o.text, logprobs=self._logprobs(o, 0, 0),
                                    finish_reason=o.finish_reason)
                   for i, o in enumerate(finals)]
        return self._response(choices, answer.usage(self.prompt_lens, finals))

    async def chunks(self, outputs: AsyncIterator[answer.Item]) -> AsyncIterator[bytes]:
        include_usage = bool(self.req.stream_options and self.req.stream_options.include_usage)
        encode = answer.ChunkEncoder(self._response([]), include_usage).choice
        sent_tokens: dict[int, int] = {}
        sent_chars: dict[int, int] = {}
        finals = {}
        async for index, out in outputs:
            if out.finish_reason == "error":
                yield answer.error_event(out)
                yield answer.DONE
                return
            if not out.new_text and not out.finished:
                continue
            start, offset = sent_tokens.get(index, 0), sent_chars.get(index, 0)
            sent_tokens[index] = len(out.token_ids)
            sent_chars[index] = offset + len(out.new_text)
            choice = CompletionChoice(index=index, text=out.new_text,
                                      logprobs=self._logprobs(out, start, offset),
                                      finish_reason=answer.finish_reason(out))
            if out.finished:
                finals[index] = out
            yield encode(choice)
        if include_usage:
            usage = answer.usage(self.prompt_lens, [finals[i] for i in sorted(finals)])
            yield answer.event(self._response([], usage).model_dump_json())
        yield answer.DONE
