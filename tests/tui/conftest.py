"""A real disaggregated engine (one prefill and one decode worker process, the tiny test
checkpoint, small KV pools) shared by the app's behavioural tests, and the app's options
for fast tests (a short poll)."""

from __future__ import annotations

import pytest

from dsbox.client import open_engine

PLACEMENT = "prefill:tp=1;decode:tp=1"
MAX_MODEL_LEN = 1024


def engine_fields(ckpt) -> dict:
    return dict(model=str(ckpt), dtype="float32", device="cpu", placement=PLACEMENT,
                kv_cache_memory=8 << 20, max_model_len=MAX_MODEL_LEN, num_threads=1)


@pytest.fixture(scope="session")
def engine(preln_ckpt):
    heard: list[str] = []
    client = open_engine(on_progress=heard.append, **engine_fields(preln_ckpt))
    client.progress_heard = heard
    yield client
    client.close()
