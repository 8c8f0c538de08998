"""DashboardFeed: turns the engine client's data into what the dashboard shows.

Each :meth:`DashboardFeed.refresh` takes one stats snapshot (``client.stats()``), reads the
requests finished since the last call (``client.finished_since``) and returns a frozen
:class:`DashboardView`. Every latency figure in it is the shared metrics report
(:func:`dsbox.metrics.report.build_report`) over one sliding window, so the dashboard shows
exactly what a report over the same requests says; the widgets format, they compute nothing.

The window at a snapshot taken at time ``now`` (the snapshot's own ``time``) holds the
requests that finished in ``(now - window_s, now]``, the report's duration is
``min(window_s, uptime)`` (so request rates are per second of that window), and requests
finishing after the snapshot wait for the next refresh. Everything kept is bounded by
construction: the window (at most ``MAX_WINDOW_RECORDS`` requests), the latency history
(``history_len`` points) and the chat markers (``MAX_CHAT_MARKS``), whatever the run's length.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dsbox.config.slo import SLO
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.report import MetricsReport, build_report
from dsbox.metrics.stats import EngineStats
from dsbox.tui.resources import ResourceSample
from dsbox.workloads.load_generator import LoadStatus

DEFAULT_WINDOW_S = 30.0
DEFAULT_HISTORY_LEN = 120
MAX_WINDOW_RECORDS = 5000
MAX_CHAT_MARKS = 50
TAGS = ("chat", "load")


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """The window's p50 and p90 TTFT and TPOT (seconds; NaN when the window has none) at
    ``t`` seconds of engine uptime."""

    t: float
    ttft_p50: float
    ttft_p90: float
    tpot_p50: float
    tpot_p90: float


@dataclass(frozen=True, slots=True)
class ChatMark:
    """One finished chat request: when it finished (seconds of uptime) and its latencies."""

    t: float
    ttft: float | None
    tpot: float | None


@dataclass(frozen=True, slots=True)
class DashboardView:
    """Everything the dashboard shows at one moment."""

    stats: EngineStats
    window_s: float                    # the window's length (the report's duration may be
    window_start: float                # shorter at start-up); monotonic seconds, exclusive
    records: tuple[RequestRecord, ...]  # the window's requests, oldest first
    report: MetricsReport              # build_report(records, slo, duration)
    by_tag: dict[str, MetricsReport]   # the same, per tag in TAGS
    history: tuple[LatencyPoint, ...]
    chat_marks: tuple[ChatMark, ...]
    slo: SLO
    resources: ResourceSample | None = None
    load: LoadStatus | None = None

    @property
    def duration_s(self) -> float:
        return self.report.duration_s


def window_report(records, slo: SLO, duration: float) -> MetricsReport:
    """The report the dashboard shows for a window's requests."""
    return build_report(list(records), slo=slo, duration=duration)


class DashboardFeed:
    """Polls a client; keeps the sliding window and the bounded latency history."""

    def __init__(self, client, slo: SLO, *, window_s: float = DEFAULT_WINDOW_S,
                 history_len: int = DEFAULT_HISTORY_LEN,
                 resources: Callable[[], ResourceSample] | None = None,
                 load: Callable[[], LoadStatus | None] | None = None) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window_s!r}")
        if history_len < 2:
            raise ValueError(f"history_len must be >= 2 points, got {history_len!r}")
        self.client = client
        self.slo = slo
        self.window_s = float(window_s)
        self._resources = resources
        self._load = load
        self._cursor = 0
        self._pending: deque[RequestRecord] = deque(maxlen=MAX_WINDOW_RECORDS)
        self.history: deque[LatencyPoint] = deque(maxlen=history_len)
        self.chat_marks: deque[ChatMark] = deque(maxlen=MAX_CHAT_MARKS)
        self.last: DashboardView | None = None

    def refresh(self) -> DashboardView:
        stats: EngineStats = self.client.stats()
        now = stats.time
        started = now - stats.uptime_s
        new, self._cursor = self.client.finished_since(self._cursor)
        self._pending.extend(new)
        for r in new:
            if r.tag == "chat":
                self.chat_marks.append(ChatMark(_finish(r) - started, r.lifecycle.ttft,
                                                r.lifecycle.tpot))
        start = now - self.window_s
        while self._pending and _finish(self._pending[0]) <= start:
            self._pending.popleft()
        records = tuple(r for r in self._pending if _finish(r) <= now)
        duration = min(self.window_s, stats.uptime_s)
        report = window_report(records, self.slo, duration)
        by_tag = {tag: window_report([r for r in records if r.tag == tag], self.slo, duration)
                  for tag in TAGS}
        self.history.append(LatencyPoint(stats.uptime_s, report.ttft.median, report.ttft.p90,
                                         report.tpot.median, report.tpot.p90))
        self.last = DashboardView(
            stats=stats, window_s=self.window_s, window_start=start, records=records,
            report=report, by_tag=by_tag, history=tuple(self.history),
            chat_marks=tuple(self.chat_marks), slo=self.slo,
            resources=self._resources() if self._resources is not None else None,
            load=self._load() if self._load is not None else None)
        return self.last


def _finish(record: RequestRecord) -> float:
    lc = record.lifecycle
    return lc.finish if lc.finish is not None else lc.arrival
