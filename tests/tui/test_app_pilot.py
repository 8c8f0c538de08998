"""The app driven by Textual's pilot over a real disaggregated engine (two worker processes):
a chat round trip that streams in chunks, Escape mid-reply freeing the request's KV, the
load generator moving the dashboard's counters, the dashboard's figures equal to the metrics
report over the same window, the help screen, and a quit that stops every worker."""

from __future__ import annotations

import math
import time

import pytest

from dsbox.chat_template import ChatTemplate
from dsbox.client import open_engine
from dsbox.config.slo import SLO
from dsbox.metrics.report import build_report
from dsbox.tui.app import make_app
from dsbox.tui.feed import DashboardFeed
from dsbox.tui.format import ms, pct, rate
from dsbox.tui.screens.help_screen import HelpScreen
from dsbox.tui.widgets.chat_message import ChatMessage
from dsbox.tui.widgets.load_panel import LoadPanel
from dsbox.tui.widgets.window_summary import StatusLine, WindowSummary
from dsbox.workloads import RequestSpec, load_workload
from tests.tui.conftest import engine_fields
from tests.tui.processes import alive, left_in_shm, shm_files, wait_gone

SIZE = (120, 40)


async def until(pilot, predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        await pilot.pause(0.05)


def short_outputs(name: str) -> list[RequestSpec]:
    """A real workload's prompts with outputs cut to 8 tokens (the load finishes fast)."""
    return [RequestSpec(r.num_prompt_tokens, min(r.num_output_tokens, 8), r.prompt)
            for r in load_workload(name)]


def _app(client, **kw):
    kw.setdefault("poll_interval_s", 0.2)
    kw.setdefault("workloads", short_outputs)
    return make_app(client, **kw)


async def _type(pilot, text: str) -> None:
    await pilot.press(*text)


def _text(widget) -> str:
    return str(widget.render())


@pytest.mark.asyncio
async def test_chat_round_trip_streams_in_chunks(engine):
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        assert app.focused is not None and app.focused.id == "prompt"  # type at once
        await _type(pilot, "Hello there")
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.last_output is not None, what="the reply")
        final = app.chat.last_output
        assert final.finish_reason in ("stop", "length")
        assert app.chat.num_chunks >= 2, "the reply did not stream"
        messages = list(app.query(ChatMessage))
        assert [m.role for m in messages] == ["user", "assistant"]
        footer = _text(messages[1].query_one(".latency"))
        assert f"TTFT {ms(final.lifecycle.ttft)}" in footer
        assert f"TPOT {ms(final.lifecycle.tpot)}" in footer
        assert messages[1].text == final.text
        # the prompt was the template's rendering of the turn, and the turn is kept
        assert final.prompt == ChatTemplate().render([{"role": "user",
                                                      "content": "Hello there"}])
        assert app.chat.session.messages == [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": final.text}]
        records, _ = engine.finished_since(0)
        assert [r.tag for r in records if r.request_id == final.request_id] == ["chat"]


@pytest.mark.asyncio
async def test_escape_mid_reply_aborts_and_frees_kv(engine):
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        max_tokens = app.chat.query_one("#max-tokens")
        max_tokens.value = "1000"   # far more than the test lets it generate
        app.chat.query_one("#temperature").value = "0"
        app.chat.query_one("#prompt").focus()
        await _type(pilot, "Tell me a long story")
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.num_chunks >= 2, what="two chunks")
        rid = app.chat.request_id
        assert rid is not None and app.chat.replying
        await pilot.press("escape")
        await until(pilot, lambda: not app.chat.replying, what="the cancel")

        def aborted():
            return [r for r in engine.finished_since(0)[0] if r.request_id == rid]

        await until(pilot, aborted, what="the aborted record")
        record = aborted()[0]
        assert record.finish_reason == "abort" and record.num_output_tokens < 1000
        stats = engine.stats()
        assert stats.kv_blocks_used == 0, stats  # the request's KV is freed everywhere
        assert all(n == 0 for n in engine.state_sizes().values())
        # the unanswered message is back in the input, the turn not kept
        assert app.chat.query_one("#prompt").value == "Tell me a long story"
        assert app.chat.session.messages == []
        assert "cancelled" in _text(list(app.query(ChatMessage))[-1].query_one(".latency"))


@pytest.mark.asyncio
async def test_load_generator_moves_the_dashboard(engine):
    app = _app(engine, workload="humaneval", load_rate=10.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.num_polls >= 1, what="the first poll")
        first = app.feed.last
        await pilot.press("f2")
        await until(pilot, lambda: app.load is not None and app.load.status().finished >= 3,
                    what="load requests to finish")
        polls = app.num_polls
        await until(pilot, lambda: app.num_polls >= polls + 2, what="two more polls")
        view = app.feed.last
        assert view.stats.num_requests > first.stats.num_requests
        assert view.stats.generation_tokens > first.stats.generation_tokens
        assert view.by_tag["load"].num_requests >= 1
        summary = _text(app.query_one(WindowSummary))
        assert f"load {view.by_tag['load'].num_requests})" in summary
        panel = _text(app.query_one(LoadPanel))
        assert "load on humaneval at 10 req/s" in panel and " sent," in panel
        await pilot.press("f4")  # faster, live
        assert app.load.rate == 20.0 and "at 20 req/s" in _text(app.query_one(LoadPanel))
        await pilot.press("f3", "f3")
        assert app.load.rate == 5.0
        await pilot.press("f2")  # off
        assert not app.load.running
    app.load.stop(abort=True)


@pytest.mark.asyncio
async def test_dashboard_figures_equal_the_metrics_report(engine):
    slo = SLO(0.5, 0.05, name="test")
    app = _app(engine, slo=slo, window_s=20.0, workload="humaneval", load_rate=20.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await until(pilot, lambda: app.load is not None and app.load.status().finished >= 5,
                    what="load requests to finish")
        await pilot.press("f2")
        polls = app.num_polls
        await until(pilot, lambda: app.num_polls >= polls + 2, what="two more polls")
        view = app.feed.last
        summary = _text(app.query_one(WindowSummary))
    app.load.stop(abort=True)
    # the same window, read independently from the engine's finished log
    records = [r for r in engine.finished_since(0)[0]
               if view.window_start < r.lifecycle.finish <= view.stats.time]
    duration = min(20.0, view.stats.uptime_s)
    report = build_report(records, slo=slo, duration=duration)
    assert report.num_requests == view.report.num_requests >= 5
    assert f"last {duration:.0f} s: {report.num_requests} finished" in summary
    assert rate(report.request_throughput, "req/s") in summary
    assert rate(report.output_throughput, "tok/s") in summary
    assert f"SLO attainment {pct(report.slo_attainment)}" in summary
    assert (f"TTFT p50 {ms(report.ttft.median)} p90 {ms(report.ttft.p90)} · "
            f"TPOT p50 {ms(report.tpot.median)} p90 {ms(report.tpot.p90)}") in summary
    chat = build_report([r for r in records if r.tag == "chat"], slo=slo, duration=duration)
    assert f"chat  TTFT p50 {ms(chat.ttft.median)}" in summary
    point = view.history[-1]  # the plots' newest point is the same report's percentiles
    for got, want in ((point.ttft_p50, report.ttft.median), (point.ttft_p90, report.ttft.p90),
                      (point.tpot_p50, report.tpot.median), (point.tpot_p90, report.tpot.p90)):
        assert got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.asyncio
async def test_80x24_keeps_the_key_figures_in_view_and_f6_shows_the_whole_dashboard(engine):
    app = _app(engine, workload="humaneval", load_rate=20.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await until(pilot, lambda: app.load is not None and app.load.status().finished >= 3,
                    what="load requests to finish")
        await pilot.press("f2")
        polls = app.num_polls
        await until(pilot, lambda: app.num_polls >= polls + 1, what="one more poll")
        line = app.query_one(StatusLine)
        chat, dashboard = app.query_one("#chat"), app.query_one("#dashboard")
        view, text = app.feed.last, _text(line)
        # on screen at 80 x 24, one row, and the same report the dashboard shows
        assert line.display and line.region.height == 1 and line.region.y < 24
        assert f"SLO {pct(view.report.slo_attainment)}" in text
        assert f"p90 TTFT {ms(view.report.ttft.p90)} TPOT {ms(view.report.tpot.p90)}" in text
        assert f"{view.stats.num_waiting} wait {view.stats.num_running} run" in text
        assert f"KV {pct(view.stats.kv_usage)}" in text
        assert app.query_one("#prompt").has_focus
        await pilot.press("f6")
        await pilot.pause()
        assert not chat.display and not line.display and dashboard.region.height >= 20
        await pilot.press("f6")
        await pilot.pause()
        assert chat.display and line.display and app.query_one("#prompt").has_focus
    app.load.stop(abort=True)


def test_feed_histories_are_bounded(engine):
    feed = DashboardFeed(engine, SLO.preset("chatbot-13b"), history_len=5)
    for _ in range(12):
        feed.refresh()
    assert len(feed.history) == 5 and feed.history.maxlen == 5
    assert feed.chat_marks.maxlen is not None and feed._pending.maxlen is not None


@pytest.mark.asyncio
async def test_help_screen(engine):
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        app.chat.query_one("#messages").focus()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert not isinstance(app.screen, HelpScreen)


@pytest.fixture
def own_engine(preln_ckpt):
    client = open_engine(**engine_fields(preln_ckpt))
    yield client
    client.close()


@pytest.mark.asyncio
async def test_quit_stops_every_worker(own_engine):
    workers = {p.pid for inst in own_engine.instances for p in inst.executor.processes}
    assert len(workers) == 2 and alive(workers) == workers, workers
    shm = shm_files(workers)
    app = _app(own_engine, owns_client=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.num_polls >= 1)
        await pilot.press("ctrl+q")
    assert not app.is_running
    assert not own_engine.health().ok and own_engine.health().error == "the engine is closed"
    assert not wait_gone(workers), "worker processes left"
    # the workers' KV pools are gone; the queues' semaphores (sem.mp-*) belong to this
    # process, which still holds the closed engine (the subprocess tests check them too)
    assert not {p for p in left_in_shm(shm) if not p.startswith("/dev/shm/sem.mp-")}

