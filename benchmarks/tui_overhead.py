"""What the ``dsbox run`` app costs the engine: throughput with the app open vs the client
alone, and the app's memory over a long run.

``--mode throughput`` (default): one engine (default: opt-tiny, one prefill and one decode
worker process, as ``dsbox run`` starts it on this box); the same saturating load (ShareGPT
prompts from the load generator, a Poisson rate far above capacity, at most
``--max-in-flight`` outstanding, the same seed every phase) runs ``--phases`` times
alternately through the client alone and with the app open (headless ``run_test``, 160 x 48,
polling every second as in a terminal), ``--seconds`` per phase. Reported per phase: output
tokens/s (the engine's counter over the phase) and the load's TPOT p50 from the metrics
report, and the CPU time of this process (the engine's loop, the load generator and, when
open, the app; the workers are other processes) per second of the phase; then the best of
each side and their ratio (the box is shared: the best phase is the least disturbed) and
the mean CPU share of each side.

``--mode memory``: the app open (headless) under a steady load (``--rate``) for
``--minutes``; every ``--sample-s`` the process RSS, the feed's history lengths and the
engine's finished-log length are printed, then the RSS growth from the first sample after
warm-up to the last. Run it in the background: ``nice -n 19 .venv/bin/python
benchmarks/tui_overhead.py --mode memory --minutes 30 > out.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from dsbox.client import open_engine
from dsbox.metrics.report import build_report
from dsbox.tui.app import make_app
from dsbox.workloads import load_workload
from dsbox.workloads.load_generator import LoadGenerator


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def engine(args):
    return open_engine(model=args.model, placement=args.placement, dtype="float32",
                       device="cpu", kv_cache_memory=args.kv_cache_memory << 20,
                       max_model_len=args.max_model_len, dummy_weights=True)


async def _with_app(client, seconds: float, run) -> None:
    app = make_app(client, poll_interval_s=1.0)
    async with app.run_test(size=(160, 48)) as pilot:
        await run(pilot, app, seconds)


def phase(client, requests, args, with_app: bool) -> dict:
    gen = LoadGenerator(client, requests, rate=args.rate, seed=args.seed,
                        max_in_flight=args.max_in_flight)
    _, cursor = client.finished_since(0)
    before = client.stats()
    cpu0 = time.process_time()
    gen.start()

    async def wait(_pilot, _app, seconds):
        await asyncio.sleep(seconds)

    if with_app:
        asyncio.run(_with_app(client, args.seconds, wait))
    else:
        time.sleep(args.seconds)
    after = client.stats()
    cpu = time.process_time() - cpu0
    gen.stop(abort=True)
    records, _ = client.finished_since(cursor)
    while client.stats().num_unfinished:  # drain the aborts before the next phase
        time.sleep(0.05)
    report = build_report([r for r in records if r.ok])
    dt = after.time - before.time
    return {"side": "app open" if with_app else "client only",
            "tok_s": (after.generation_tokens - before.generation_tokens) / dt,
            "tpot_p50_ms": report.tpot.median * 1000, "finished": report.num_completed,
            "cpu_share": cpu / dt}


def throughput(args) -> None:
    requests = load_workload("sharegpt")
    with engine(args) as client:
        print(f"{args.model} placement {args.placement}; {args.seconds:.0f} s per phase, "
              f"load {args.rate:g} req/s offered, at most {args.max_in_flight} in flight")
        rows = []
        for i in range(args.phases):
            for with_app in (False, True) if i % 2 == 0 else (True, False):
                row = phase(client, requests, args, with_app)
                rows.append(row)
                print(f"  {row['side']:<12} {row['tok_s']:8.1f} tok/s  TPOT p50 "
                      f"{row['tpot_p50_ms']:6.1f} ms  {row['finished']:4d} finished  "
                      f"engine process CPU {row['cpu_share'] * 100:5.1f} %", flush=True)
        best = {side: max(r["tok_s"] for r in rows if r["side"] == side)
                for side in ("client only", "app open")}
        print(f"best: client only {best['client only']:.1f} tok/s, app open "
              f"{best['app open']:.1f} tok/s, ratio {best['app open'] / best['client only']:.3f}")
        cpu = {side: sum(r["cpu_share"] for r in rows if r["side"] == side)
               / sum(r["side"] == side for r in rows) for side in best}
        print(f"engine process CPU, mean: client only {cpu['client only'] * 100:.1f} %, "
              f"app open {cpu['app open'] * 100:.1f} % (of one core)")


def memory(args) -> None:
    requests = load_workload("sharegpt")
    with engine(args) as client:
        gen = LoadGenerator(client, requests, rate=args.rate, seed=args.seed,
                            max_in_flight=args.max_in_flight)
        gen.start()
        samples = []

        async def watch(_pilot, app, seconds):
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(args.sample_s)
                s = client.stats()
                row = (time.monotonic() - t0, rss_mib(), len(app.feed.history),
                       len(app.feed.last.records) if app.feed.last else 0,
                       len(client.finished_since(0)[0]), s.num_requests)
                samples.append(row)
                print(f"  t {row[0]:7.0f} s  RSS {row[1]:7.1f} MiB  history {row[2]:4d}  "
                      f"window {row[3]:5d}  finished log {row[4]:6d}  requests {row[5]:7d}",
                      flush=True)

        asyncio.run(_with_app(client, args.minutes * 60, watch))
        gen.stop(abort=True)
    warm = [s for s in samples if s[0] >= args.warmup_s] or samples
    print(f"RSS after {warm[0][0]:.0f} s: {warm[0][1]:.1f} MiB; at the end ({warm[-1][0]:.0f} "
          f"s): {warm[-1][1]:.1f} MiB; growth {warm[-1][1] - warm[0][1]:+.1f} MiB; "
          f"{warm[-1][5]} requests served")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("throughput", "memory"), default="throughput")
    ap.add_argument("--model", default="opt-tiny")
    ap.add_argument("--placement", default="prefill:tp=1;decode:tp=1")
    ap.add_argument("--kv-cache-memory", type=int, default=64, help="MiB per worker")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--rate", type=float, default=None,
                    help="requests/s (default: 200 for throughput, 2 for memory)")
    ap.add_argument("--max-in-flight", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=30.0, help="per throughput phase")
    ap.add_argument("--phases", type=int, default=2, help="rounds of (client, app)")
    ap.add_argument("--minutes", type=float, default=30.0, help="memory run length")
    ap.add_argument("--sample-s", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=120.0)
    args = ap.parse_args()
    if args.rate is None:
        args.rate = 200.0 if args.mode == "throughput" else 2.0
    throughput(args) if args.mode == "throughput" else memory(args)


if __name__ == "__main__":
    main()
