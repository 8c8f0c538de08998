"""Benchmark the Triton paged-attention kernels on a CUDA GPU.

Decode attention: bytes moved (K and V of every sequence read once, q read, out written)
per second of kernel time, as a share of the device's measured copy bandwidth (a large
``copy_``, read + write counted), and against torch SDPA over the same K/V laid out
contiguously. Prefill attention: TFLOP/s (causal: half of 4*L^2*D per head) against SDPA's
flash backend. KV write: bytes moved per second.

Timing (``gpu_timing.py``): a CUDA graph of back-to-back calls over rotating copies of the
inputs (a round of copies is >= 4x the L2, so no call reads operands the previous left in
L2), no launch overhead; plus ``triton.testing.do_bench`` per call (L2 flushed, launch
included) in the ``per call`` column.

    python benchmarks/bench_kernels.py            # opt-13b shapes and a few others
    python benchmarks/bench_kernels.py --quick    # the acceptance shapes only
    python benchmarks/bench_kernels.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_timing import Timing, copies_for, copy_bandwidth, time_calls  # noqa: E402

# batch, context, heads, head_dim; the first is opt-13b at batch 64, the acceptance shape
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
    ms: float                 # kernel time (graph of back-to-back calls, cold L2)
    per_call_ms: float        # do_bench: one call, L2 flushed, launch included
    metric: float             # GB/s (bytes moved) or TFLOP/s
    unit: str
    share_of_copy: float | None
    sdpa_ms: float | None
    sdpa_metric: float | None
    note: str = ""

    @property
    def vs_sdpa(self) -> float | None:
        return None if self.sdpa_ms is None else self.sdpa_ms / self.ms


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


def _row(kernel, shape, t: Timing, metric_of, unit, copy_bps, base: Timing | None,
         note: str) -> Row:
    share = metric_of(t.ms) * 1e9 / copy_bps if unit == "GB/s" and copy_bps else None
    notes = [note] + [x for x in (t.note, base.note if base else "") if x]
    return Row(kernel, shape, t.ms, t.bench_ms, metric_of(t.ms), unit, share,
               base.ms if base else None, metric_of(base.ms) if base else None,
               "; ".join(n for n in notes if n))


def bench_decode(shape, block_size: int, copy_bps: float) -> Row:
    from dsbox.kernels.decode_attention import (
        decode_attention,
        decode_num_splits,
        decode_workspace,
    )

    batch, ctx, heads, head_dim = shape
    dtype = torch.float16
    elem = 2
    nbytes = 2 * batch * ctx * heads * head_dim * elem + 2 * batch * heads * head_dim * elem
    scale = head_dim**-0.5
    ws = decode_workspace(batch, heads, head_dim, "cuda")
    splits = decode_num_splits(batch, heads, -(-ctx // block_size) * block_size, "cuda")
    calls, sdpa_calls, checks = [], [], []
    for _ in range(copies_for(nbytes, limit=8)):
        k_cache, v_cache, tables, lens, k_dense, v_dense = paged_cache(
            batch, ctx, heads, head_dim, block_size, dtype)
        q = torch.randn(batch, heads, head_dim, dtype=dtype, device="cuda")
        out = torch.empty_like(q)
        q4 = q.unsqueeze(2)
        calls.append(lambda q=q, k=k_cache, v=v_cache, t=tables, n=lens, o=out:
                     decode_attention(q, k, v, t, n, scale, o, ws))
        sdpa_calls.append(lambda q4=q4, k=k_dense, v=v_dense:
                          F.scaled_dot_product_attention(q4, k, v, scale=scale))
        checks.append((out, q4, k_dense, v_dense))
    t = time_calls(calls)
    base = time_calls(sdpa_calls)
    out, q4, k_dense, v_dense = checks[0]
    calls[0]()
    ref = F.scaled_dot_product_attention(q4, k_dense, v_dense, scale=scale).squeeze(2)
    err = (out.float() - ref.float()).abs().max().item()
    return _row("decode", f"B{batch} ctx{ctx} {heads}x{head_dim}", t,
                lambda ms: nbytes / ms / 1e6, "GB/s", copy_bps, base,
                f"splits={splits} copies={t.copies} maxerr={err:.1e}")


def bench_prefill(shape, block_size: int) -> Row:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dsbox.kernels.prefill_attention import prefill_attention

    batch, length, heads, head_dim = shape
    dtype = torch.float16
    k_cache, v_cache, block_tables, seq_lens, k_dense, v_dense = paged_cache(
        batch, length, heads, head_dim, block_size, dtype)
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

    t = time_calls([run], reps=5)
    base = time_calls([run_sdpa], reps=5)
    run()
    ref = run_sdpa().transpose(1, 2).reshape_as(out)
    err = (out.float() - ref.float()).abs().max().item()
    flops = 4 * batch * heads * head_dim * length * length / 2  # causal
    return _row("prefill", f"{batch}x{length} {heads}x{head_dim}", t,
                lambda ms: flops / ms / 1e9, "TFLOP/s", 0.0, base, f"flash maxerr={err:.1e}")


def bench_write_kv(block_size: int, copy_bps: float) -> Row:
    from dsbox.kernels.kv_write import write_kv

    tokens, heads, head_dim = 8192, 40, 128
    key = torch.randn(tokens, heads, head_dim, dtype=torch.float16, device="cuda")
    value = torch.randn_like(key)
    k_cache = torch.empty(tokens // block_size + 1, block_size, heads, head_dim,
                          dtype=torch.float16, device="cuda")
    v_cache = torch.empty_like(k_cache)
    slots = torch.randperm(tokens, device="cuda")
    t = time_calls([lambda: write_kv(key, value, k_cache, v_cache, slots)])
    nbytes = 4 * key.numel() * key.element_size()  # read K, V; write K, V
    return _row("write_kv", f"{tokens} tok {heads}x{head_dim}", t,
                lambda ms: nbytes / ms / 1e6, "GB/s", copy_bps, None, "")


def run(quick: bool = True, block_size: int = 16, log=print) -> dict:
    """Every row as a dict, plus the copy bandwidth and the device; ``log`` each row."""
    device = torch.cuda.get_device_name()
    copy_bps = copy_bandwidth()
    log(f"copy bandwidth: {copy_bps / 1e9:.0f} GB/s (read + write)")
    rows = []
    for shape in DECODE_SHAPES[:1] if quick else DECODE_SHAPES:
        rows.append(bench_decode(shape, block_size, copy_bps))
        torch.cuda.empty_cache()
        log(format_row(rows[-1]))
    for shape in PREFILL_SHAPES[:1] if quick else PREFILL_SHAPES:
        rows.append(bench_prefill(shape, block_size))
        torch.cuda.empty_cache()
        log(format_row(rows[-1]))
    if not quick:
        rows.append(bench_write_kv(block_size, copy_bps))
        log(format_row(rows[-1]))
    return {"device": device, "copy_GBps": copy_bps / 1e9, "block_size": block_size,
            "rows": [dict(asdict(r), vs_sdpa=r.vs_sdpa) for r in rows]}


def format_row(r: Row) -> str:
    share = f"{r.share_of_copy:.0%}" if r.share_of_copy is not None else "-"
    base = f"{r.sdpa_metric:.1f} {r.unit}" if r.sdpa_metric is not None else "-"
    ratio = f"{r.vs_sdpa:.2f}x" if r.vs_sdpa is not None else "-"
    return (f"{r.kernel:<9} {r.shape:<22} {r.ms:8.3f} {r.per_call_ms:9.3f} {r.metric:>9.1f} "
            f"{r.unit:<7} {share:>6} {base:>18} {ratio:>8}  {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", type=int, default=16, help="paged KV block size")
    parser.add_argument("--quick", action="store_true", help="the acceptance shapes only")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}")
    print(f"{'kernel':<9} {'shape':<22} {'ms':>8} {'per call':>9} {'achieved':>17} "
          f"{'%copy':>6} {'SDPA':>18} {'vs SDPA':>8}  note")
    result = run(args.quick, args.block_size)
    print("ms: graph of back-to-back calls, cold L2; per call: do_bench (L2 flushed, launch "
          "included); vs SDPA = SDPA ms / kernel ms (> 1: the kernel is faster)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
