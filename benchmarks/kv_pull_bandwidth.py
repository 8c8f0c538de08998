"""KV pull on a GPU: opt-1.3b-shaped KV moved from a prefill pool into a decode pool.

1. In one process, the pull alone (``pull_blocks`` between two pools on one GPU): the
   ``copy_blocks`` kernel (what the runtime uses on one GPU) and one ``copy_`` per run of
   consecutive blocks (its path between GPUs), with the request's blocks contiguous and
   scattered. Bytes moved = the request's KV read once + written once (2 x KV bytes), per
   second of device time (``gpu_timing.py``: CUDA graph of back-to-back pulls), as a share
   of the copy bandwidth measured the same way; the peak extra memory a pull allocates.
2. Through the runtime: a prefill and a decode worker sharing the GPU, KV pulled through CUDA
   IPC. The lifecycle's transfer stamps are taken by the controller, so they include the
   decode worker's inbox wait and the messaging: reported as handoff latency, not as a
   bandwidth. Each worker process's GPU memory (NVML) is read while both are up.

    python benchmarks/kv_pull_bandwidth.py [--prompt-len 1024] [--requests 16] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_timing import copy_bandwidth, time_calls  # noqa: E402

MODEL = "opt-1.3b"


def _pools(prompt_len: int, block_size: int):
    from dsbox.config import get_model_spec

    spec = get_model_spec(MODEL)
    nblk = -(-prompt_len // block_size)
    shape = (spec.num_layers, 2, 4 * nblk, block_size, spec.num_heads, spec.head_dim)
    src = torch.randn(shape, dtype=torch.float16, device="cuda")
    dst = torch.zeros_like(src)
    return spec, nblk, src, dst


def pull_in_process(prompt_len: int, block_size: int, copy_bps: float, log=print) -> list[dict]:
    """One row per (method, block layout)."""
    import triton.testing

    from dsbox.engine.runtime.kv_transfer import PoolShard, pull_blocks
    from dsbox.kernels.kv_copy import copy_blocks, copy_blocks_ref

    spec, nblk, src, dst = _pools(prompt_len, block_size)
    shard = PoolShard(range(spec.num_layers), range(spec.num_heads))
    layouts = {
        "contiguous": (list(range(nblk)), list(range(2 * nblk, 3 * nblk))),
        "scattered": (list(range(0, 2 * nblk, 2)), list(range(4 * nblk - 1, 2 * nblk - 1, -2))),
    }
    rows = []
    for layout, (src_blocks, dst_blocks) in layouts.items():
        pairs = list(zip(src_blocks, dst_blocks, strict=True))
        pairs_dev = torch.tensor(pairs, dtype=torch.int32, device="cuda")
        methods = {  # graph-capturable calls: the pair list is made once, outside
            "copy_blocks kernel": lambda p=pairs_dev: copy_blocks(src, dst, p),
            "copy_ per run": lambda p=pairs: copy_blocks_ref(src, dst, p),
        }
        # the whole pull_blocks call as the runtime makes it (pair list upload included)
        pull_ms = triton.testing.do_bench(
            lambda s=src_blocks, d=dst_blocks: pull_blocks(dst, shard, d, [(src, shard)], s),
            warmup=5, rep=30, return_mode="median")
        for method, call in methods.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            nbytes = pull_blocks(dst, shard, dst_blocks, [(src, shard)], src_blocks)
            call()  # peak memory of one pull, either path
            torch.cuda.synchronize()
            extra = torch.cuda.max_memory_allocated() - before
            t = time_calls([call], reps=10)
            moved = 2 * nbytes
            row = {"method": method, "layout": layout, "kv_bytes": nbytes, "ms": t.ms,
                   "per_call_ms": t.bench_ms, "GBps_moved": moved / t.ms / 1e6,
                   "share_of_copy": moved / (t.ms / 1e3) / copy_bps,
                   "extra_bytes_allocated": extra, "pull_blocks_per_call_ms": pull_ms,
                   "note": t.note}
            rows.append(row)
            log(f"  {method:<20} {layout:<11} {row['ms']:7.3f} ms {row['GBps_moved']:7.0f} GB/s "
                f"moved ({row['share_of_copy']:.0%} of copy), per call {t.bench_ms:.3f} ms, "
                f"extra alloc {extra / 2**20:.1f} MiB; pull_blocks per call {pull_ms:.3f} ms")
    return rows


def gpu_processes() -> dict[int, int]:
    """pid -> GPU memory bytes of every compute process on GPU 0 (NVML); {} if unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        return {p.pid: int(p.usedGpuMemory or 0) for p in procs}
    except Exception:  # NVML missing or not permitted: report nothing
        return {}


def pull_runtime(prompt_len: int, requests: int, log=print) -> dict:
    """Handoff latency per request and per-process GPU memory through the runtime."""
    from dsbox import SamplingParams
    from dsbox.client import open_engine
    from dsbox.config import EngineConfig, get_model_spec

    spec = get_model_spec(MODEL)
    cfg = EngineConfig(model=MODEL, dummy_weights=True, dtype="float16", device="cuda",
                       kv_cache_memory=8 << 30, max_num_batched_tokens=max(2048, prompt_len),
                       placement="prefill:tp=1;decode:tp=1", share_devices=True)
    kv_bytes = spec.kv_bytes_per_token("float16") * prompt_len
    with open_engine(cfg) as ctl:
        prompts = [[2] + [(i * 7919 + j) % 50000 + 4 for j in range(prompt_len - 1)]
                   for i in range(requests)]
        outs = ctl.generate(prompts, SamplingParams(max_tokens=4, temperature=0,
                                                    ignore_eos=True))
        procs = gpu_processes()
        roles = {}
        for inst in getattr(ctl, "instances", []):
            for w, p in zip(inst.workers, inst.processes, strict=False):
                roles[p.pid] = f"{inst.role}{inst.instance_id}-rank{w.rank}"
        transfer_bytes = ctl.transfer_bytes
    lat = sorted(o.lifecycle.transfer_end - o.lifecycle.transfer_start for o in outs)
    memory = {roles.get(pid, f"pid {pid}" + (" (this process)" if pid == os.getpid() else "")):
              used for pid, used in procs.items()}
    result = {"requests": requests, "prompt_len": prompt_len, "kv_bytes_per_request": kv_bytes,
              "transfer_bytes_reported": transfer_bytes,
              "handoff_ms_median": 1e3 * statistics.median(lat),
              "handoff_ms_p90": 1e3 * lat[int(0.9 * (len(lat) - 1))],
              "handoff_ms_min": 1e3 * lat[0], "gpu_memory_bytes": memory}
    log(f"  runtime handoff (queueing + messaging + copy): median "
        f"{result['handoff_ms_median']:.2f} ms, p90 {result['handoff_ms_p90']:.2f} ms, min "
        f"{result['handoff_ms_min']:.2f} ms for {kv_bytes / 2**20:.0f} MiB of KV")
    for name, used in memory.items():
        log(f"  GPU memory {name}: {used / 2**30:.2f} GiB")
    return result


def run(prompt_len: int = 1024, requests: int = 16, block_size: int = 16, runtime: bool = True,
        log=print) -> dict:
    copy_bps = copy_bandwidth()
    log(f"  copy bandwidth {copy_bps / 1e9:.0f} GB/s (read + write)")
    result = {"device": torch.cuda.get_device_name(), "model": MODEL, "copy_GBps": copy_bps / 1e9,
              "prompt_len": prompt_len,
              "in_process": pull_in_process(prompt_len, block_size, copy_bps, log)}
    torch.cuda.empty_cache()
    if runtime:
        result["runtime"] = pull_runtime(prompt_len, requests, log)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-len", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--no-runtime", action="store_true", help="the in-process pull only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("kv_pull_bandwidth: needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name()}; {MODEL} KV, {args.prompt_len} tokens")
    result = run(args.prompt_len, args.requests, runtime=not args.no_runtime)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
