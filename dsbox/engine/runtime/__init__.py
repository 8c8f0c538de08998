"""The serving runtime: instances of a placement run in this process or in worker
processes (one per device); requests are routed, KV is handed from prefill to decode."""
