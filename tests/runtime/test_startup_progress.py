"""Start-up progress: ``open_engine(on_progress=...)`` hears each stage and each worker
that has its weights in place (what ``dsbox run`` shows before its app opens)."""

from __future__ import annotations

from dsbox.client import open_engine


def test_progress_names_each_stage_and_worker(preln_ckpt):
    heard: list[str] = []
    with open_engine(model=str(preln_ckpt), dtype="float32", device="cpu",
                     kv_cache_memory=4 << 20, on_progress=heard.append):
        pass
    assert heard[0].startswith("loading weights")
    assert "worker colocated0 rank 0 loaded its weights (1/1)" in heard
    assert heard.index("worker colocated0 rank 0 loaded its weights (1/1)") \
        < heard.index("sizing the KV cache") < heard.index("allocating the KV cache")
    assert heard[-1] == "ready"
