"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Handlers raise :class:`APIError` (or one of its constructors below); :func:`install` makes
every error the app can produce (a validation failure, an unknown route, an unexpected
exception) come out in this shape with its status, so an OpenAI client raises the matching
exception (``BadRequestError``, ``AuthenticationError``, ``NotFoundError``,
``RateLimitError``, ``InternalServerError``).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

logger = logging.getLogger("dsbox")

#: How long a client refused for a full queue is told to wait (``Retry-After``), seconds.
RETRY_AFTER_S = 1

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
          404: "invalid_request_error", 405: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error response: HTTP status and OpenAI's four fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def queue_full(num_waiting: int, limit: int) -> APIError:
    return APIError(429, f"the server is busy: {num_waiting} requests are waiting for their "
                         f"first token (limit {limit}); retry in {RETRY_AFTER_S} s",
                    code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})


def engine_failed(message: str) -> APIError:
    return APIError(500, message or "the engine failed this request", code="engine_error")


def from_validation(exc: ValidationError) -> APIError:
    """The first problem pydantic found in a request body, as a 400 naming the field."""
    err = exc.errors(include_url=False)[0]
    kind = err["type"]
    # union members appear in loc as type names ("str", "list[int]"): keep the field path
    loc = [str(x) for x in err["loc"] if isinstance(x, int) or not _is_type_tag(str(x))]
    param = ".".join(loc) or None
    if kind == "json_invalid":
        return bad_request(f"malformed JSON in the request body: "
                           f"{err.get('ctx', {}).get('error', err['msg'])}")
    if kind == "model_type" and not loc:
        return bad_request("the request body must be a JSON object")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param)
    if kind == "missing":
        return bad_request(f"missing required parameter: '{param}'", param)
    if kind == "literal_error" or kind.endswith("_type") or kind.endswith("_parsing"):
        return bad_request(f"{param}: {err['msg']}, got {err.get('input')!r}", param)
    return bad_request(f"{param}: {err['msg']}" if param else err["msg"], param)


def _is_type_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "dict") or "[" in part \
        or part.startswith("function-") or part[:1].isupper()


def install(app) -> None:
    """Exception handlers that answer every error in OpenAI's shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(err: APIError) -> JSONResponse:
        metrics = getattr(app.state, "metrics", None)
        if metrics is not None:
            metrics.count_error(err.status)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(APIError)
    async def api_error(_request, exc: APIError):
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        errors = exc.errors()
        message = errors[0].get("msg", "invalid request") if errors else "invalid request"
        return respond(bad_request(message))

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return respond(APIError(exc.status_code, str(exc.detail), code=code,
                                headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        logger.error("request failed: %r", exc, exc_info=exc)
        return respond(APIError(500, f"internal error: {exc!r}", code="internal_error"))
