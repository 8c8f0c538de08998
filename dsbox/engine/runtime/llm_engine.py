"""LLMEngine: the colocated in-process engine (the baseline of every comparison).

Owns the tokenizer, one Scheduler over one BlockManager, and one ModelRunner. ``step()``
schedules, runs and samples one step, detokenizes, applies stop strings, and returns the
outputs of the requests that progressed. Every request carries its lifecycle stamps.
"""

from __future__ import annotations

import itertools
import time

import torch

from dsbox.config import EngineConfig, ModelSpec
from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.request_tracker import RequestTracker
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.scheduler import Scheduler, SchedulerConfig
from dsbox.engine.core.sequence import FinishReason, Sequence
from dsbox.engine.core.step_batch import build_step_batch
from dsbox.engine.model.attention import make_attention_backend
from dsbox.engine.model.kv_pool import allocate_pool, bytes_per_block, kv_budget
from dsbox.engine.model.runner import ModelRunner
from dsbox.engine.model.source import ModelSource, resolve_model
from dsbox.engine.model.tokenizer import (
    Tokenizer,
    bundled_tokenizer,
    load_tokenizer,
)
from dsbox.engine.model.weights import build_model
from dsbox.metrics.lifecycle import Lifecycle

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return TORCH_DTYPES[name]


def load_source_tokenizer(source: ModelSource) -> Tokenizer:
    return load_tokenizer(source.tokenizer_dir) if source.tokenizer_dir else bundled_tokenizer()


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.source = resolve_model(config.model, config.dummy_weights)
        spec: ModelSpec = self.source.spec
        self.spec = spec
        self.tokenizer = load_source_tokenizer(self.source)
        weights = None if config.dummy_weights else self.source.weights_dir
        self.model = build_model(spec, self.dtype, self.device, weights,
                                 dummy_seed=config.seed)
        self.max_model_len = min(config.max_model_len or spec.max_position_embeddings,
                                 spec.max_position_embeddings)
        per_block = bytes_per_block(spec.num_layers, spec.num_heads, spec.head_dim,
                                    config.block_size, self.dtype)
        budget = kv_budget(self.device, config.kv_cache_memory, config.kv_cache_fraction)
        num_blocks = budget // per_block
        if num_blocks < 1:
            raise ValueError(f"KV cache budget of {budget} bytes holds no block of "
                             f"{per_block} bytes; raise kv_cache_memory")
        pool = allocate_pool(spec.num_layers, num_blocks, config.block_size, spec.num_heads,
                             spec.head_dim, self.dtype, self.device)
        backend = make_attention_backend(config.attention_backend, self.device)
        self.runner = ModelRunner(self.model, pool, config.block_size, backend, self.device,
                                  seed=config.seed)
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.scheduler = Scheduler(
            SchedulerConfig(config.max_num_batched_tokens, config.max_num_seqs),
            self.block_manager)
        # a sequence never outgrows the pool, so a preempted one can always come back
        self.max_model_len = min(self.max_model_len, num_blocks * config.block_size)
        self.tracker = RequestTracker(self.tokenizer, spec, self.max_model_len)
        self._ids = itertools.count()

    # --- requests ------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        return self.tracker.encode_prompt(prompt)

    def add_request(self, prompt: str | list[int], params: SamplingParams,
                    arrival: float | None = None) -> int:
        text, ids = self.encode_prompt(prompt)
        return self._add(text, ids, params, arrival)

    def _add(self, text: str | None, ids: list[int], params: SamplingParams,
             arrival: float | None) -> int:
        now = time.monotonic()
        rid = next(self._ids)
        seq = Sequence(rid, ids, params, Lifecycle(arrival if arrival is not None else now),
                       eos_token_id=self.tokenizer.eos_token_id)
        self.scheduler.add(seq, now)
        self.tracker.add(seq, text)
        return rid

    def abort(self, request_id: int) -> RequestOutput | None:
        if request_id not in self.tracker:
            return None
        self.scheduler.abort(request_id, time.monotonic())
        return self.tracker.output(request_id)

    def has_unfinished(self) -> bool:
        return len(self.tracker) > 0

    @property
    def num_unfinished(self) -> int:
        return len(self.tracker)

    def _finish(self, seq_id: int, reason: FinishReason) -> None:
        self.scheduler.finish(seq_id, reason, time.monotonic())

    # --- one step ------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        out = self.scheduler.schedule(time.monotonic())
        if out is None or not out.seqs:
            return []
        batch = build_step_batch(out, self.scheduler.seqs)
        tokens = self.runner.execute(batch)
        now = time.monotonic()
        self.scheduler.on_step_done(out, tokens, now)
        outputs = []
        for sid in batch.seq_ids:
            out = self.tracker.advance(sid, now, self._finish)
            if out is not None:
                outputs.append(out)
        return outputs
