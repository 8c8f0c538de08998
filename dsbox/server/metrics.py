"""``GET /metrics``: Prometheus text through ``prometheus_client``, from the engine client's
stats snapshot and its log of finished requests (nothing is measured here).

Names follow vLLM v1's where one exists, under ``dsbox:`` instead of ``vllm:``, all labelled
``model_name``:

- histograms, one observation per finished request (``EngineClient.finished_since``):
  ``time_to_first_token_seconds``, ``inter_token_latency_seconds`` (every gap),
  ``request_time_per_output_token_seconds``, ``e2e_request_latency_seconds``,
  ``request_queue_time_seconds``, ``request_prefill_time_seconds``,
  ``request_decode_time_seconds``, ``request_prompt_tokens``,
  ``request_generation_tokens``; and dsbox's own, per request that moved its KV from a
  prefill to a decode instance: ``kv_transfer_time_seconds`` and ``kv_transfer_bytes``;
- from the stats snapshot at each scrape: gauges ``num_requests_running``,
  ``num_requests_waiting``, ``kv_cache_usage_perc`` (0..1, as vLLM's), counters
  ``prompt_tokens_total``, ``generation_tokens_total``,
  ``request_success_total{finished_reason}`` (stop, length, abort, error), and per instance
  (labels ``instance``, ``role``): ``instance_healthy``, ``instance_num_waiting``,
  ``instance_num_running``, ``instance_queue_depth``, ``instance_kv_blocks_used``,
  ``instance_kv_blocks_total``, ``instance_kv_usage_perc``,
  ``instance_kv_transfer_bytes_total{direction="in"|"out"}``;
- the server's own: ``http_request_errors_total{status}``, ``server_num_waiting`` (requests
  admitted without a first token, the quantity ``--max-waiting`` bounds).

The finished log is read at every scrape and by a background poll (``poll``), so no
request is missed between rare scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dsbox.client import EngineClient
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.stats import EngineStats
from dsbox.server.jobs import WaitingGate

PREFIX = "dsbox:"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# vLLM v1's buckets
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
# dsbox's: a KV handoff takes from tens of microseconds (one GPU) to seconds (slow links)
TRANSFER_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                    0.5, 1.0, 2.0, 5.0, 10.0)
BYTES_BUCKETS = tuple(float(1 << k) for k in range(10, 36, 2))  # 1 KiB .. 16 GiB


class ServerMetrics:
    """The registry ``/metrics`` renders, fed from one engine client."""

    def __init__(self, client: EngineClient, model_name: str, gate: WaitingGate) -> None:
        self.client = client
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self._cursor = 0
        self._lock = threading.Lock()

        def hist(name: str, doc: str, buckets) -> Histogram:
            return Histogram(PREFIX + name, doc, ["model_name"], buckets=buckets,
                             registry=self.registry).labels(model_name)

        self.ttft = hist("time_to_first_token_seconds", "Time to first token, seconds.",
                         TTFT_BUCKETS)
        self.itl = hist("inter_token_latency_seconds", "Gap between consecutive tokens, "
                        "seconds.", ITL_BUCKETS)
        self.tpot = hist("request_time_per_output_token_seconds", "Mean time per output "
                         "token after the first, per request, seconds.", ITL_BUCKETS)
        self.e2e = hist("e2e_request_latency_seconds", "Arrival to finish, seconds.",
                        LATENCY_BUCKETS)
        self.queue = hist("request_queue_time_seconds", "Waiting before the first prefill "
                          "step, seconds.", LATENCY_BUCKETS)
        self.prefill = hist("request_prefill_time_seconds", "First prefill step start to its "
                            "end, seconds.", LATENCY_BUCKETS)
        self.decode = hist("request_decode_time_seconds", "First decode step to finish, "
                           "seconds.", LATENCY_BUCKETS)
        self.prompt_len = hist("request_prompt_tokens", "Prompt length per request, tokens.",
                               TOKEN_BUCKETS)
        self.output_len = hist("request_generation_tokens", "Tokens generated per request.",
                               TOKEN_BUCKETS)
        self.transfer = hist("kv_transfer_time_seconds", "KV cache handoff from the prefill "
                             "to the decode instance, per request, seconds.", TRANSFER_BUCKETS)
        self.transfer_bytes = hist("kv_transfer_bytes", "KV cache bytes moved from the "
                                   "prefill to the decode instance, per request.",
                                   BYTES_BUCKETS)
        self.errors = Counter(PREFIX + "http_request_errors", "Error responses by HTTP "
                              "status.", ["model_name", "status"], registry=self.registry)
        self.registry.register(_StatsCollector(client, model_name, gate))

    def observe(self, record: RequestRecord) -> None:
        lc = record.lifecycle
        if lc.ttft is not None:
            self.ttft.observe(lc.ttft)
        for gap in lc.inter_token_latencies():
            self.itl.observe(gap)
        if len(lc.token_times) > 1:
            self.tpot.observe(lc.tpot)
        if lc.latency is not None:
            self.e2e.observe(lc.latency)
        if lc.queue_time is not None:
            self.queue.observe(lc.queue_time)
        if lc.prefill_start is not None and lc.prefill_end is not None:
            self.prefill.observe(lc.prefill_end - lc.prefill_start)
        if lc.decode_start is not None and lc.finish is not None:
            self.decode.observe(lc.finish - lc.decode_start)
        self.prompt_len.observe(record.num_prompt_tokens)
        self.output_len.observe(record.num_output_tokens)
        if record.kv_bytes > 0 and lc.transfer_time is not None:
            self.transfer.observe(lc.transfer_time)
            self.transfer_bytes.observe(record.kv_bytes)

    def poll(self) -> int:
        """Observe every request finished since the last poll; how many there were."""
        with self._lock:
            records, self._cursor = self.client.finished_since(self._cursor)
            for record in records:
                self.observe(record)
        return len(records)

    def count_error(self, status: int) -> None:
        self.errors.labels(self.model_name, str(status)).inc()

    def render(self) -> bytes:
        """The exposition text, up to date (reads the finished log and a fresh snapshot)."""
        self.poll()
        return generate_latest(self.registry)


class _StatsCollector(Collector):
    """Gauges and counters from one stats snapshot per scrape."""

    def __init__(self, client: EngineClient, model_name: str, gate: WaitingGate) -> None:
        self.client = client
        self.model_name = model_name
        self.gate = gate

    def describe(self) -> list:
        return []  # families are only known at collect time (no registration-time scrape)

    def collect(self) -> Iterator:
        stats: EngineStats = self.client.stats()
        m = [self.model_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(PREFIX + name, doc, labels=["model_name"])
            g.add_metric(m, value)
            return g

        yield gauge("num_requests_running", "Requests in decode batches.", stats.num_running)
        yield gauge("num_requests_waiting", "Requests queued for prefill.", stats.num_waiting)
        yield gauge("kv_cache_usage_perc", "Share of all KV cache blocks in use (0..1).",
                    stats.kv_usage)
        yield gauge("server_num_waiting", "Requests admitted by the server that have no "
                    "token yet.", self.gate.num_waiting)
        for name, doc, value in (("prompt_tokens", "Prompt tokens prefilled.",
                                  stats.prompt_tokens),
                                 ("generation_tokens", "Tokens generated.",
                                  stats.generation_tokens)):
            c = CounterMetricFamily(PREFIX + name, doc, labels=["model_name"])
            c.add_metric(m, value)
            yield c
        success = CounterMetricFamily(PREFIX + "request_success", "Finished requests by "
                                      "finish reason.", labels=["model_name", "finished_reason"])
        for reason, n in stats.finished_by_reason().items():
            success.add_metric(m + [reason], n)
        yield success
        yield from _instance_families(stats, m)


def _instance_families(stats: EngineStats, m: list[str]) -> Iterator:
    labels = ["model_name", "instance", "role"]
    gauges = {
        "instance_healthy": ("1 while the instance serves, 0 once it failed.",
                             lambda i: float(i.healthy)),
        "instance_num_waiting": ("Requests queued for prefill at this instance.",
                                 lambda i: i.num_waiting),
        "instance_num_running": ("Running batch: decoding (decode, colocated) or in a "
                                 "prefill step (prefill).", lambda i: i.num_running),
        "instance_queue_depth": ("Requests waiting at this instance (prefill queue, or KV "
                                 "pulls outstanding at a decode instance).",
                                 lambda i: i.queue_depth),
        "instance_kv_blocks_used": ("KV cache blocks in use.", lambda i: i.kv_blocks_used),
        "instance_kv_blocks_total": ("KV cache blocks in the pool.",
                                     lambda i: i.kv_blocks_total),
        "instance_kv_usage_perc": ("Share of this instance's KV blocks in use (0..1).",
                                   lambda i: i.kv_usage),
    }
    for name, (doc, value) in gauges.items():
        g = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
        for inst in stats.instances:
            g.add_metric(m + [str(inst.instance_id), inst.role], value(inst))
        yield g
    moved = CounterMetricFamily(PREFIX + "instance_kv_transfer_bytes", "KV cache bytes pulled "
                                "into (in) or out of (out) this instance.",
                                labels=labels + ["direction"])
    for inst in stats.instances:
        key = m + [str(inst.instance_id), inst.role]
        moved.add_metric(key + ["in"], inst.kv_bytes_in)
        moved.add_metric(key + ["out"], inst.kv_bytes_out)
    yield moved
