"""The FastAPI app of ``dsbox serve``: one factory, :func:`make_app`, for the CLI and tests.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed or not),
``GET /v1/models`` (and ``/v1/models/{id}``), ``GET /health`` and ``GET /metrics``. With
an API key every endpoint but ``/health`` needs ``Authorization: Bearer <key>``. Every
error is OpenAI's JSON shape (:mod:`dsbox.server.errors`).

``/health`` answers 200 while every instance serves and 503 once one failed, with each
instance's role, health, error, devices and worker process ids (from the last stats
snapshot, refreshed every second by the same background poll that feeds ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dsbox.chat_template import ChatTemplate
from dsbox.client import EngineClient
from dsbox.server import errors
from dsbox.server.chat import create_chat_completion
from dsbox.server.completions import create_completion
from dsbox.server.errors import APIError
from dsbox.server.jobs import WaitingGate
from dsbox.server.metrics import CONTENT_TYPE, ServerMetrics
from dsbox.server.protocol import ModelCard, ModelList
from dsbox.server.state import ServerState

logger = logging.getLogger("dsbox")
POLL_S = 1.0


def make_app(client: EngineClient, *, model_name: str | None = None,
             chat_template: ChatTemplate | None = None, api_key: str | None = None,
             max_waiting: int | None = None, poll_interval: float = POLL_S) -> FastAPI:
    """The server over ``client`` (which the caller opens and closes). ``model_name`` is
    what clients ask for (default: the model's name); ``max_waiting`` bounds the requests
    without a first token (beyond it: 429 with ``Retry-After``); None: no bound."""
    state = ServerState(client=client, model_name=model_name or client.spec.name,
                        chat_template=chat_template or ChatTemplate(),
                        gate=WaitingGate(max_waiting))
    metrics = ServerMetrics(client, state.model_name, state.gate)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(_poll(app, metrics, client, poll_interval))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="dsbox", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = state
    app.state.metrics = metrics
    app.state.last_stats = None
    errors.install(app)
    auth = [Depends(_auth(api_key))]

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request) -> Response:
        return await create_completion(request, state)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> Response:
        return await create_chat_completion(request, state)

    def card() -> ModelCard:
        return ModelCard(id=state.model_name, created=state.created,
                         max_model_len=client.max_model_len)

    @app.get("/v1/models", dependencies=auth)
    async def models() -> JSONResponse:
        return JSONResponse(ModelList(data=[card()]).model_dump(mode="json"))

    @app.get("/v1/models/{model:path}", dependencies=auth)
    async def model(model: str) -> JSONResponse:
        if model != state.model_name:
            raise APIError(404, f"The model `{model}` does not exist.", param="model",
                           code="model_not_found")
        return JSONResponse(card().model_dump(mode="json"))

    @app.get("/metrics", dependencies=auth)
    def prometheus() -> Response:  # sync: runs in the thread pool (it waits for a snapshot)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(*_health(client, app.state.last_stats))

    return app


def _auth(api_key: str | None):
    expected = None if not api_key else f"Bearer {api_key}".encode()

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization")
        if given is None:
            raise APIError(401, "Missing API key: send the header 'Authorization: Bearer "
                                "<key>'.", code="invalid_api_key")
        if not secrets.compare_digest(given.encode(), expected):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    return check


def _health(client: EngineClient, stats) -> tuple[dict, int]:
    health = client.health()
    detail = {i.instance_id: i for i in stats.instances} if stats is not None else {}
    rows = []
    for iid, role, healthy, error in health.instances:
        row = {"instance": iid, "role": role, "healthy": healthy, "error": error}
        if iid in detail:
            row["devices"] = list(detail[iid].devices)
            row["pids"] = list(detail[iid].pids)
        rows.append(row)
    body = {"status": "ok" if health.ok else "unhealthy", "error": health.error,
            "instances": rows}
    return body, 200 if health.ok else 503


async def _poll(app: FastAPI, metrics: ServerMetrics, client: EngineClient,
                interval: float) -> None:
    """Every ``interval`` s: observe newly finished requests, refresh the stats snapshot."""
    while True:
        try:
            await asyncio.to_thread(metrics.poll)
            app.state.last_stats = await asyncio.to_thread(client.stats)
        except Exception as exc:  # a closed or failed engine: /health says so
            logger.debug("metrics poll: %r", exc)
        await asyncio.sleep(interval)
