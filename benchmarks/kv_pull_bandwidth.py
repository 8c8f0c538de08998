"""KV pull bandwidth on a GPU: opt-1.3b-shaped KV moved from a prefill to a decode worker.

Two figures, side by side with the device's copy bandwidth (a large ``copy_``):
1. the pull kernel alone (``pull_blocks`` between two pools in one process), and
2. end to end through the runtime: a prefill and a decode worker sharing the GPU, KV pulled
   through CUDA IPC, bandwidth from each request's transfer stamps (messaging included).

    python benchmarks/kv_pull_bandwidth.py [--prompt-len 1024] [--requests 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch


def copy_bandwidth(nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy bandwidth, bytes/s (read + write counted)."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / statistics.median(times)


def kernel_bandwidth(prompt_len: int, block_size: int = 16, reps: int = 20) -> float:
    from dsbox.config import get_model_spec
    from dsbox.engine.runtime.kv_transfer import PoolShard, pull_blocks

    spec = get_model_spec("opt-1.3b")
    nblk = -(-prompt_len // block_size)
    shape = (spec.num_layers, 2, 4 * nblk, block_size, spec.num_heads, spec.head_dim)
    src = torch.randn(shape, dtype=torch.float16, device="cuda")
    dst = torch.zeros_like(src)
    shard = PoolShard(range(spec.num_layers), range(spec.num_heads))
    src_blocks = list(range(0, 2 * nblk, 2))
    dst_blocks = list(range(1, 2 * nblk, 2))
    nbytes = pull_blocks(dst, shard, dst_blocks, [(src, shard)], src_blocks)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        pull_blocks(dst, shard, dst_blocks, [(src, shard)], src_blocks)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / statistics.median(times)


def runtime_bandwidth(prompt_len: int, requests: int) -> tuple[float, float]:
    """Median and best per-request pull bandwidth (bytes/s, read + write) in the runtime."""
    from dsbox import SamplingParams
    from dsbox.client import open_engine
    from dsbox.config import EngineConfig, get_model_spec

    spec = get_model_spec("opt-1.3b")
    cfg = EngineConfig(model="opt-1.3b", dummy_weights=True, dtype="float16", device="cuda",
                       kv_cache_memory=8 << 30, max_num_batched_tokens=prompt_len,
                       placement="prefill:tp=1;decode:tp=1", share_devices=True)
    kv_bytes = spec.kv_bytes_per_token("float16") * prompt_len
    with open_engine(cfg) as ctl:
        prompts = [[2] + [(i * 7919 + j) % 50000 + 4 for j in range(prompt_len - 1)]
                   for i in range(requests)]
        outs = ctl.generate(prompts, SamplingParams(max_tokens=2, temperature=0,
                                                    ignore_eos=True))
    rates = [2 * kv_bytes / (o.lifecycle.transfer_end - o.lifecycle.transfer_start)
             for o in outs]
    return statistics.median(rates), max(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-len", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=32)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("kv_pull_bandwidth: needs a CUDA GPU", file=sys.stderr)
        return 2
    copy = copy_bandwidth()
    kern = kernel_bandwidth(args.prompt_len)
    med, best = runtime_bandwidth(args.prompt_len, args.requests)
    print(f"device: {torch.cuda.get_device_name()}; opt-1.3b KV, {args.prompt_len} tokens "
          f"({args.prompt_len * 192 / 1024:.0f} MiB) per request")
    print(f"{'what':<34}{'GB/s':>10}{'of copy':>10}")
    for name, bw in (("device copy_ (read+write)", copy), ("pull_blocks kernel", kern),
                     ("runtime pull, median request", med), ("runtime pull, best request", best)):
        print(f"{name:<34}{bw / 1e9:>10.1f}{bw / copy:>10.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
