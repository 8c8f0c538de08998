"""The engine client: one door for every front end (see :mod:`dsbox.client.base`).

::

    from dsbox.client import open_engine
    with open_engine(model="opt-tiny", placement="prefill:tp=1;decode:tp=1") as client:
        async for out in client.stream("Hello", SamplingParams(max_tokens=8)): ...
"""

from __future__ import annotations

from collections.abc import Callable

from dsbox.client.base import EngineClient, EngineInfo, OutputCallback
from dsbox.config import EngineConfig


def open_engine(config: EngineConfig | None = None, *,
                on_progress: Callable[[str], None] | None = None, **fields) -> EngineClient:
    """Start an engine from a config (or its fields as keywords) and return its client.
    ``on_progress`` hears each start-up stage (loading weights, sizing the KV cache...)."""
    from dsbox.engine.runtime.engine import Engine

    if config is None:
        config = EngineConfig(**fields)
    elif fields:
        raise TypeError("pass either an EngineConfig or its fields, not both")
    return Engine(config, on_progress=on_progress)


__all__ = ["EngineClient", "EngineInfo", "OutputCallback", "open_engine"]
