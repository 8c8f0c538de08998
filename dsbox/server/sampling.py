"""From a validated API request to the engine's inputs: prompt token ids and one
``SamplingParams`` per choice; every bad value becomes a 400 naming its field.

The context window is checked here, where both numbers are known: a prompt of P tokens
with ``max_tokens`` M needs ``P + M <= max_model_len`` (OpenAI's rule and message). Without
``max_tokens`` (chat's default) a reply may use whatever the window leaves.
"""

from __future__ import annotations

from dsbox.engine.core.sampling_params import MAX_LOGPROBS, SamplingParams
from dsbox.server.errors import APIError, bad_request
from dsbox.server.protocol import ChatCompletionRequest, CompletionRequest

MAX_N = 128
MAX_STOPS = 4
_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "logprobs")


def check_model(requested: str, served: str) -> None:
    if requested != served:
        raise APIError(404, f"The model `{requested}` does not exist; this server serves "
                            f"`{served}`.", param="model", code="model_not_found")


def check_unsupported(req: CompletionRequest | ChatCompletionRequest) -> None:
    """OpenAI fields dsbox knows but does not implement: only their neutral value passes."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value not in (None, 0, 0.0):
            raise bad_request(f"{name} is not supported by dsbox (only 0)", name)
    if req.logit_bias:
        raise bad_request("logit_bias is not supported by dsbox", "logit_bias")
    if not 1 <= req.n <= MAX_N:
        raise bad_request(f"n must be between 1 and {MAX_N}, got {req.n}", "n")
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise bad_request("echo is not supported by dsbox", "echo")
        if req.suffix:
            raise bad_request("suffix is not supported by dsbox", "suffix")
        if req.best_of not in (None, req.n):
            raise bad_request("best_of is not supported by dsbox (only best_of = n)", "best_of")
    else:
        if req.tools:
            raise bad_request("tools are not supported by dsbox", "tools")
        if req.tool_choice not in (None, "none", "auto"):
            raise bad_request("tool_choice is not supported by dsbox", "tool_choice")
        if req.response_format is not None and req.response_format.type != "text":
            raise bad_request("response_format: only {'type': 'text'} is supported by dsbox",
                              "response_format")


def stops_of(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise bad_request(f"stop takes at most {MAX_STOPS} strings, got {len(stops)}", "stop")
    if any(not s for s in stops):
        raise bad_request("stop strings must not be empty", "stop")
    return stops


def check_context(num_prompt_tokens: int, max_tokens: int | None, max_model_len: int,
                  what: str, param: str) -> int:
    """``max_tokens`` to use (the window's rest when None); 400 if the prompt and the
    completion do not fit in ``max_model_len`` together."""
    room = max_model_len - num_prompt_tokens
    if max_tokens is None:
        if room >= 1:
            return room
        max_tokens = 1
    if num_prompt_tokens + max_tokens > max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {num_prompt_tokens + max_tokens} tokens ({num_prompt_tokens} in the "
            f"{what}, {max_tokens} for the completion). Please reduce the length of the "
            f"{what} or completion.", param, code="context_length_exceeded")
    return max_tokens


def sampling_params(req: CompletionRequest | ChatCompletionRequest, max_tokens: int,
                    stops: list[str], logprobs: int | None) -> list[SamplingParams]:
    """One SamplingParams per choice (seeds offset by the choice's index); 400 on bad
    values, with the engine's own message."""
    kwargs: dict = {"max_tokens": max_tokens, "stop": stops, "ignore_eos": req.ignore_eos,
                    "logprobs": logprobs}
    if req.temperature is not None:
        kwargs["temperature"] = req.temperature
    if req.top_p is not None:
        kwargs["top_p"] = req.top_p
    if req.top_k is not None:
        kwargs["top_k"] = 0 if req.top_k == -1 else req.top_k  # -1: vLLM's "off"
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        field = "logprobs" if isinstance(req, CompletionRequest) else "top_logprobs"
        raise bad_request(f"{field} must be between 0 and {MAX_LOGPROBS}, got {logprobs}",
                          field)
    out = []
    for i in range(req.n):
        seed = None if req.seed is None else req.seed + i
        try:
            out.append(SamplingParams(seed=seed, **kwargs))
        except ValueError as exc:
            message = str(exc)
            param = message.split()[0] if message.split()[0] in _PARAMS else None
            raise bad_request(message, param) from None
    return out
