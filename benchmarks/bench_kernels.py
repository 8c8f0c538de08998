"""Benchmark the Triton paged-attention kernels on a CUDA GPU.

Decode attention: achieved GB/s (K and V bytes read plus q and out) against the device's
measured copy bandwidth (a large ``copy_``) and against torch SDPA over the same K/V laid
out contiguously. Prefill attention: TFLOP/s (causal: half of 4*L^2*D per head) against
SDPA's flash backend. KV write: GB/s. Timing: CUDA events, warm-up, median of repeats.
A short table is printed last.

    python benchmarks/bench_kernels.py            # opt-13b shapes and a few others
    python benchmarks/bench_kernels.py --quick    # opt-13b shapes only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# batch, context, heads, head_dim; the first is opt-13b, the acceptance shape
DECODE_SHAPES = [
    (64, 2048, 40, 128),
    (8, 2048, 40, 128),
    (1, 2048, 40, 128),
    (128, 1024, 32, 80),
    (256, 512, 32, 64),
]
# batch, prompt length, heads, head_dim
PREFILL_SHAPES = [(8, 1024, 40, 128), (4, 2048, 32, 80), (16, 512, 32, 64)]


@dataclass
class Row:
    kernel: str
    shape: str
    ms: float
    metric: float  # GB/s or TFLOP/s
    unit: str
    baseline_ms: float | None
    baseline_metric: float | None
    note: str = ""


def time_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` on the GPU, in milliseconds (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(args) -> float:
    """Device memory bandwidth in GB/s from a 2 GiB tensor copy (read + write)."""
    src = torch.empty(1 << 30, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), args.warmup, args.repeats)
    gbs = 2 * src.numel() * src.element_size() / ms / 1e6
    return gbs


def paged_cache(batch, ctx, heads, head_dim, block_size, dtype):
    """K/V of ``batch`` sequences of ``ctx`` tokens in shuffled paged blocks, and the same
    K/V contiguous as [batch, heads, ctx, head_dim] for SDPA."""
    blocks_per_seq = -(-ctx // block_size)
    num_blocks = batch * blocks_per_seq
    k_cache = torch.randn(num_blocks, block_size, heads, head_dim, dtype=dtype, device="cuda")
    v_cache = torch.randn_like(k_cache)
    perm = torch.randperm(num_blocks, device="cuda")
    block_tables = perm.view(batch, blocks_per_seq).to(torch.int32)
    seq_lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")

    def contiguous(cache):
        dense = cache[block_tables.long()].flatten(1, 2)[:, :ctx]  # [B, ctx, H, D]
        return dense.transpose(1, 2).contiguous()

    return k_cache, v_cache, block_tables, seq_lens, contiguous(k_cache), contiguous(v_cache)


def bench_decode(args, shape) -> Row:
    from dsbox.kernels.decode_attention import (
        decode_attention,
        decode_num_splits,
        decode_workspace,
    )

    batch, ctx, heads, head_dim = shape
    dtype = torch.float16
    k_cache, v_cache, block_tables, seq_lens, k_dense, v_dense = paged_cache(
        batch, ctx, heads, head_dim, args.block_size, dtype)
    q = torch.randn(batch, heads, head_dim, dtype=dtype, device="cuda")
    out = torch.empty_like(q)
    scale = head_dim**-0.5
    ws = decode_workspace(batch, heads, head_dim, "cuda")
    splits = decode_num_splits(batch, heads, block_tables.shape[1] * args.block_size, "cuda")

    def run():
        decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale, out, ws)

    q4 = q.unsqueeze(2)  # [B, H, 1, D]

    def run_sdpa():
        return F.scaled_dot_product_attention(q4, k_dense, v_dense, scale=scale)

    run()
    err = (out.float() - run_sdpa().squeeze(2).float()).abs().max().item()
    ms = time_ms(run, args.warmup, args.repeats)
    sdpa_ms = time_ms(run_sdpa, args.warmup, args.repeats)
    elem = q.element_size()
    nbytes = 2 * batch * ctx * heads * head_dim * elem + 2 * q.numel() * elem
    return Row("decode", f"B{batch} ctx{ctx} {heads}x{head_dim}", ms, nbytes / ms / 1e6, "GB/s",
               sdpa_ms, nbytes / sdpa_ms / 1e6, f"splits={splits} maxerr={err:.1e}")


def bench_prefill(args, shape) -> Row:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dsbox.kernels.prefill_attention import prefill_attention

    batch, length, heads, head_dim = shape
    dtype = torch.float16
    k_cache, v_cache, block_tables, seq_lens, k_dense, v_dense = paged_cache(
        batch, length, heads, head_dim, args.block_size, dtype)
    q_dense = torch.randn(batch, heads, length, head_dim, dtype=dtype, device="cuda")
    q = q_dense.transpose(1, 2).reshape(batch * length, heads, head_dim).contiguous()
    out = torch.empty_like(q)
    cu = torch.arange(0, batch + 1, dtype=torch.int32, device="cuda") * length
    scale = head_dim**-0.5

    def run():
        prefill_attention(q, k_cache, v_cache, cu, seq_lens, block_tables, scale, out,
                          max_q_len=length)

    def run_sdpa():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q_dense, k_dense, v_dense, is_causal=True,
                                                  scale=scale)

    run()
    ref = run_sdpa().transpose(1, 2).reshape_as(out)
    err = (out.float() - ref.float()).abs().max().item()
    ms = time_ms(run, args.warmup, args.repeats)
    sdpa_ms = time_ms(run_sdpa, args.warmup, args.repeats)
    flops = 4 * batch * heads * head_dim * length * length / 2  # causal
    return Row("prefill", f"{batch}x{length} {heads}x{head_dim}", ms, flops / ms / 1e9,
               "TFLOP/s", sdpa_ms, flops / sdpa_ms / 1e9, f"flash maxerr={err:.1e}")


def bench_write_kv(args) -> Row:
    from dsbox.kernels.kv_write import write_kv

    tokens, heads, head_dim = 8192, 40, 128
    key = torch.randn(tokens, heads, head_dim, dtype=torch.float16, device="cuda")
    value = torch.randn_like(key)
    k_cache = torch.empty(tokens // args.block_size + 1, args.block_size, heads, head_dim,
                          dtype=torch.float16, device="cuda")
    v_cache = torch.empty_like(k_cache)
    slots = torch.randperm(tokens, device="cuda")
    ms = time_ms(lambda: write_kv(key, value, k_cache, v_cache, slots), args.warmup,
                 args.repeats)
    nbytes = 4 * key.numel() * key.element_size()  # read K, V; write K, V
    return Row("write_kv", f"{tokens} tok {heads}x{head_dim}", ms, nbytes / ms / 1e6, "GB/s",
               None, None)


def print_table(rows: list[Row], copy_gbs: float, device: str) -> None:
    print()
    print(f"device: {device}; measured copy bandwidth {copy_gbs:.0f} GB/s; fp16; block size "
          "from --block-size")
    header = (f"{'kernel':<9} {'shape':<22} {'ms':>8} {'achieved':>16} {'%copy':>6} "
              f"{'baseline (SDPA)':>20} {'vs SDPA':>8}  note")
    print(header)
    print("-" * len(header))
    for r in rows:
        pct = f"{100 * r.metric / copy_gbs:.0f}%" if r.unit == "GB/s" else ""
        base = f"{r.baseline_metric:.1f} {r.unit}" if r.baseline_metric is not None else "-"
        ratio = f"{r.baseline_ms / r.ms:.2f}x" if r.baseline_ms is not None else "-"
        print(f"{r.kernel:<9} {r.shape:<22} {r.ms:8.3f} {r.metric:>9.1f} {r.unit:<6} {pct:>6} "
              f"{base:>20} {ratio:>8}  {r.note}")
    print("vs SDPA = SDPA time / kernel time (> 1: the kernel is faster)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", type=int, default=16, help="paged KV block size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="only the opt-13b shapes")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2

    device = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, device {device}")
    copy_gbs = copy_bandwidth(args)
    torch.cuda.empty_cache()
    print(f"copy bandwidth: {copy_gbs:.0f} GB/s")
    decode_shapes = DECODE_SHAPES[:1] if args.quick else DECODE_SHAPES
    prefill_shapes = PREFILL_SHAPES[:1] if args.quick else PREFILL_SHAPES
    rows = []
    for shape in decode_shapes:
        rows.append(bench_decode(args, shape))
        torch.cuda.empty_cache()
        print(rows[-1])
    for shape in prefill_shapes:
        rows.append(bench_prefill(args, shape))
        torch.cuda.empty_cache()
        print(rows[-1])
    rows.append(bench_write_kv(args))
    print_table(rows, copy_gbs, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
