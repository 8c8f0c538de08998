"""What the HTTP server costs: token throughput through ``dsbox serve`` on loopback against
the same load through the engine client in-process.

Both sides run the same engine config (model, placement, KV pool) and the same load: R
requests of P-token prompts (token ids, so both sides see identical prompts) arriving at
once, each generating exactly T tokens (greedy, EOS ignored), all streamed. Server side:
``dsbox serve`` in a subprocess, the load sent from this process with aiohttp (server-sent
events parsed as they arrive, as ``vllm bench serve`` does; httpx costs about 2.5 times as
much CPU per event, which on a small machine competes with the server), tokens counted
from each stream's final usage chunk. In-process side: an engine opened here, the same requests
through ``EngineClient.stream``. Throughput = generated tokens / wall time from the first
request sent to the last one finished. CPU time per generated token is shown for the
front end (the server process: engine loop and HTTP; or this process: engine loop and
streams; worker processes are not counted on either side) and for the load generator. The
two sides alternate and the best of
``--repeats`` runs of each counts, which keeps other load on the machine out of the
comparison.

    python benchmarks/server_overhead.py [--model opt-125m] [--requests 32] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
PLACEMENT = "prefill:tp=1;decode:tp=1"


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of one process's threads so far, not its children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prompts_of(n: int, length: int) -> list[list[int]]:
    return [[2] + [100 + (31 * i + 7 * j) % 40000 for j in range(length - 1)]
            for i in range(n)]


def start_server(args) -> tuple[subprocess.Popen, str]:
    script = Path(sys.executable).with_name("dsbox")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "dsbox"]
    cmd += ["serve", args.model, "--placement", args.placement, "--device", "cpu",
            "--dtype", "float32", "--kv-cache-memory", args.kv_cache_memory,
            "--max-model-len", str(args.max_model_len), "--port", "0"]
    if args.dummy_weights:
        cmd.append("--dummy-weights")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            m = re.search(r"serving \S+ on (http://\S+)", line)
            if m:
                url.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(600) or not url:
        proc.kill()
        raise RuntimeError("dsbox serve did not start")
    return proc, url[0]


async def server_run(url: str, model: str, prompts, tokens: int) -> tuple[int, float]:
    import aiohttp

    async def one(session: aiohttp.ClientSession, prompt) -> int:
        body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        generated = 0
        async with session.post(url + "/v1/completions", json=body) as res:
            res.raise_for_status()
            async for line in res.content:
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        generated = chunk["usage"]["completion_tokens"]
        return generated

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(session, p) for p in prompts))
        wall = time.perf_counter() - t0
    return sum(counts), wall


async def inprocess_run(client, prompts, tokens: int) -> tuple[int, float]:
    from dsbox import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)

    async def one(prompt) -> int:
        last = None
        async for out in client.stream(prompt, params):
            last = out
        return len(last.token_ids)

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(p) for p in prompts))
    return sum(counts), time.perf_counter() - t0


def main() -> int:
    from dsbox.cli.options import parse_bytes
    from dsbox.client import open_engine
    from dsbox.engine.model.source import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="opt-125m")
    ap.add_argument("--dummy-weights", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--placement", default=PLACEMENT)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kv-cache-memory", default="256MiB")
    ap.add_argument("--max-model-len", type=int, default=256)
    args = ap.parse_args()
    name = resolve_model(args.model, args.dummy_weights).spec.name
    prompts = prompts_of(args.requests, args.prompt_len)
    warm = prompts_of(4, args.prompt_len)
    proc, url = start_server(args)
    best = {"server": 0.0, "in-process": 0.0}
    cpu: dict[str, list[tuple[float, float]]] = {"server": [], "in-process": []}
    loads = []
    try:
        with open_engine(model=args.model, dummy_weights=args.dummy_weights,
                         placement=args.placement, device="cpu", dtype="float32",
                         kv_cache_memory=parse_bytes(args.kv_cache_memory),
                         max_model_len=args.max_model_len) as client:
            asyncio.run(server_run(url, name, warm, 4))
            asyncio.run(inprocess_run(client, warm, 4))
            for _ in range(args.repeats):
                for side in ("server", "in-process"):
                    server_cpu, own_cpu = process_cpu_s(proc.pid), time.process_time()
                    if side == "server":
                        n, wall = asyncio.run(server_run(url, name, prompts, args.tokens))
                    else:
                        n, wall = asyncio.run(inprocess_run(client, prompts, args.tokens))
                    assert n == args.requests * args.tokens, (side, n)
                    server_cpu = process_cpu_s(proc.pid) - server_cpu
                    own_cpu = time.process_time() - own_cpu
                    # the front end: the server process (engine loop + HTTP), or this
                    # process (engine loop + streams); the load generator: this process
                    front = server_cpu if side == "server" else own_cpu
                    cpu[side].append((front / n, own_cpu / n if side == "server" else 0.0))
                    best[side] = max(best[side], n / wall)
                    loads.append(os.getloadavg()[0])
                    print(f"  {side:>10}: {n} tokens in {wall:.2f} s = {n / wall:.1f} tok/s",
                          flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"{time.strftime('%Y-%m-%d')}  {name}{' (dummy weights)' if args.dummy_weights else ''}"
          f", {args.placement}, {args.requests} streamed requests x {args.prompt_len} prompt "
          f"+ {args.tokens} output tokens, best of {args.repeats}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    print(f"{'side':>12} {'output tokens/s':>16} {'front-end CPU/token':>20} "
          f"{'load generator CPU/token':>25}")
    for side in ("in-process", "server"):
        front = statistics.median(c[0] for c in cpu[side]) * 1e6
        gen = statistics.median(c[1] for c in cpu[side]) * 1e6
        gen_text = f"{gen:.0f} us" if side == "server" else "-"
        print(f"{side:>12} {best[side]:>16.1f} {front:>17.0f} us {gen_text:>25}")
    ratio = best["server"] / best["in-process"]
    print(f"server / in-process = {ratio:.3f} ({(1 - ratio) * 100:+.1f}% overhead)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
