"""Compiled variants: the kernels' launch keys stay few across batches and table widths.

On the CPU the keys are Triton's own (its binder, for an sm_90 target), computed for every
launch under the interpreter: the set of keys is the set of variants a GPU compiles for those
launches. On CUDA the same tests count what Triton really compiled. The launches go through
the engine's real input layout (one packed buffer per step) and the Triton attention
backend, as a decode worker makes them.
"""

from __future__ import annotations

import pytest
import torch

from dsbox.config import get_model_spec
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.step_batch import StepBatch
from dsbox.engine.model.attention import TritonAttention
from dsbox.engine.model.kv_pool import allocate_pool
from dsbox.engine.model.runner import ModelRunner
from dsbox.engine.model.weights import build_model
from dsbox.kernels.decode_attention import decode_attention, decode_num_splits
from dsbox.kernels.launch_keys import LaunchKeyRecorder, compiled_variants

BLOCK = 16
# every kernel's variants for one dtype / head_dim / block size: two for the decode split
# stage (one split writes the output directly, several go through the merge stage)
BOUND = {"write_kv_kernel": 1, "prefill_attention_kernel": 1, "decode_split_kernel": 2,
         "decode_merge_kernel": 1}


class Variants:
    """Variants per kernel made inside the block: launch keys on the CPU (exact), newly
    compiled kernels on CUDA (those compiled earlier in the session are not counted)."""

    def __init__(self, device: str) -> None:
        self.cpu = device == "cpu"

    def __enter__(self) -> Variants:
        if self.cpu:
            self.recorder = LaunchKeyRecorder().__enter__()
        else:
            self.base = compiled_variants()
        return self

    def __exit__(self, *exc) -> None:
        if self.cpu:
            self.recorder.__exit__(*exc)

    def counts(self) -> dict[str, int]:
        if self.cpu:
            return self.recorder.counts
        now = compiled_variants()
        return {k: v - self.base.get(k, 0) for k, v in now.items() if v > self.base.get(k, 0)}


def _within(counts: dict[str, int], bound: dict[str, int]) -> bool:
    return all(counts.get(k, 0) <= bound.get(k, 0) for k in counts)


def _step(prefill: bool, q_lens: list[int], ctx_lens: list[int], width: int) -> StepBatch:
    n = len(q_lens)
    return StepBatch(
        is_prefill=prefill, seq_ids=tuple(range(n)), token_ids=(5,) * sum(q_lens),
        starts=tuple(c - q for q, c in zip(q_lens, ctx_lens, strict=True)),
        context_lens=tuple(ctx_lens),
        block_tables=tuple(tuple((i + j) % 3 for j in range(width)) for i in range(n)),
        params=(SamplingParams(max_tokens=1, temperature=0),) * n, output_index=(0,) * n)


def _run(runner: ModelRunner, batch: StepBatch) -> None:
    meta = runner.prepare(batch)[2]
    heads, head_dim = runner.kv_pool.shape[4], runner.kv_pool.shape[5]
    k_cache, v_cache = runner.kv_caches[1]
    t = len(batch.token_ids)
    q, k, v = (torch.randn(t, heads, head_dim, dtype=runner.kv_pool.dtype,
                           device=runner.device) for _ in range(3))
    runner.backend.forward(q, k, v, k_cache, v_cache, meta, 0.25)


def _runner(device: torch.device, dtype=torch.float16) -> ModelRunner:
    spec = get_model_spec("opt-tiny")  # 2 layers, 4 heads of 16
    model = build_model(spec, dtype, device, None, dummy_seed=0)
    pool = allocate_pool(spec.num_layers, 4, BLOCK, spec.num_heads, spec.head_dim, dtype,
                         device)
    pool.zero_()
    return ModelRunner(model, pool, BLOCK, TritonAttention(device), device)


def test_no_variant_compiles_after_warmup_across_batches_and_widths(device):
    dev = torch.device(device)
    runner = _runner(dev)
    # (batch, table width): widths 1 (an integer 1 is specialised), 16/32/64/128 (divisible
    # by 16) and odd ones; on the CPU ("1 SM") the split count runs 1..16 with them
    decode = [(1, 1), (1, 9), (1, 17), (2, 32), (1, 64), (1, 128), (3, 33), (5, 16), (17, 2)]
    prefill = [([3], 1), ([16, 7], 2), ([1, 2, 5], 17), ([4], 32)]
    if device == "cpu":
        splits = {decode_num_splits(b, 4, w * BLOCK, dev) for b, w in decode}
        assert {1, 2, 3, 16} <= splits
    with Variants(device) as variants:
        assert runner.warmup() == 3
        after_warmup = variants.counts()
        assert _within(after_warmup, BOUND), after_warmup
        if device == "cpu":
            assert after_warmup == BOUND
        for b, w in decode:
            ctx = [1 + (i % 3) for i in range(b)]
            _run(runner, _step(False, [1] * b, ctx, w))
        for q_lens, w in prefill:
            _run(runner, _step(True, q_lens, [q + 2 for q in q_lens], w))
        assert variants.counts() == after_warmup, "a step compiled what the warm-up did not"


def test_explicit_split_counts_share_one_variant(device):
    kv = torch.randn(4, BLOCK, 2, 64, dtype=torch.float16, device=device)
    tables = torch.zeros(1, 40, dtype=torch.int32, device=device)
    lens = torch.tensor([3], dtype=torch.int32, device=device)
    q = torch.randn(1, 2, 64, dtype=torch.float16, device=device)
    with Variants(device) as variants:
        for splits in (1, 2, 5, 16):
            decode_attention(q, kv, kv, tables, lens, 0.1, torch.empty_like(q),
                             num_splits=splits)
        counts = variants.counts()
    assert _within(counts, {"decode_split_kernel": 2, "decode_merge_kernel": 1}), counts


def test_recorder_sees_what_triton_specialises(device):
    """The recorder is live: a block table at an odd offset (pointer not 16-byte aligned)
    and another dtype are new variants, as on a GPU."""
    if device != "cpu":
        pytest.skip("checks the CPU recorder")
    kv16 = torch.randn(4, BLOCK, 1, 64, dtype=torch.float16)
    lens = torch.tensor([3], dtype=torch.int32)
    base = torch.zeros(2, 8, dtype=torch.int32)
    with LaunchKeyRecorder() as rec:
        for tables, kv in ((base[:1], kv16), (base.view(-1)[1:9].view(1, 8), kv16),
                           (base[:1], kv16.float())):
            q = torch.randn(1, 1, 64, dtype=kv.dtype)
            decode_attention(q, kv, kv, tables, lens, 0.1, torch.empty_like(q), num_splits=1)
    assert rec.counts == {"decode_split_kernel": 3}
