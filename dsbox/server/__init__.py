"""``dsbox serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the engine
client, with Prometheus metrics and OpenAI-shaped errors.

``make_app(client, ...)`` (:mod:`dsbox.server.app`) builds the app; :mod:`dsbox.server.config`
holds the server's settings (the CLI's options); :mod:`dsbox.server.run` binds and serves.
This package needs fastapi, uvicorn and prometheus_client; nothing outside it imports them.
"""
