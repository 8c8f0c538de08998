"""LLMEngine: the colocated in-process engine (the baseline of every comparison).

Owns the tokenizer, one Scheduler over one BlockManager, and one ModelRunner. ``step()``
schedules, runs and samples one step, detokenizes, applies stop strings, and returns the
outputs of the requests that progressed. Every request carries its lifecycle stamps.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

from dsbox.config import EngineConfig, ModelSpec
from dsbox.engine.attention import make_attention_backend
from dsbox.engine.block_manager import BlockManager
from dsbox.engine.kv_pool import allocate_pool, bytes_per_block, kv_budget
from dsbox.engine.lifecycle import Lifecycle
from dsbox.engine.model_runner import ModelRunner
from dsbox.engine.model_source import ModelSource, resolve_model
from dsbox.engine.request_output import RequestOutput
from dsbox.engine.sampling_params import SamplingParams
from dsbox.engine.scheduler import Scheduler, SchedulerConfig
from dsbox.engine.sequence import FinishReason, Sequence
from dsbox.engine.step_batch import build_step_batch
from dsbox.engine.stop_checker import find_stop
from dsbox.engine.tokenizer import IncrementalDetokenizer, Tokenizer, bundled_tokenizer, \
    load_tokenizer
from dsbox.engine.weights import build_model

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


@dataclass(slots=True)
class _Request:
    seq: Sequence
    prompt: str | None
    detok: IncrementalDetokenizer
    text: str = ""
    new_text: str = ""


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
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count()

    # --- requests ------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        """Validate a prompt and return (text or None, token ids). Raises ValueError."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            ids = self.tokenizer.encode(prompt)
            text = prompt
        else:
            ids = [int(t) for t in prompt]
            text = None
            if not ids:
                raise ValueError("prompt has no tokens")
            bad = [t for t in ids if not 0 <= t < self.spec.vocab_size]
            if bad:
                raise ValueError(f"token id(s) {bad[:5]} outside the vocabulary "
                                 f"[0, {self.spec.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(ids)} tokens; the model's limit is "
                             f"{self.max_model_len} tokens including at least one generated")
        return text, ids

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
        self._requests[rid] = _Request(seq, text, IncrementalDetokenizer(self.tokenizer, ids))
        return rid

    def abort(self, request_id: int) -> RequestOutput | None:
        req = self._requests.pop(request_id, None)
        if req is None:
            return None
        self.scheduler.abort(request_id, time.monotonic())
        return self._output(req)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    @property
    def num_unfinished(self) -> int:
        return len(self._requests)

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
            req = self._requests.get(sid)
            if req is None:
                continue
            self._advance_text(req, now)
            if req.seq.is_finished:
                del self._requests[sid]
            outputs.append(self._output(req))
        return outputs

    def _advance_text(self, req: _Request, now: float) -> None:
        seq = req.seq
        new_ids = seq.output_token_ids[len(req.detok.ids) - seq.num_prompt_tokens:]
        delta = req.detok.add(new_ids)
        if seq.is_finished:
            delta += req.detok.flush()
        req.text += delta
        req.new_text = delta
        hit = find_stop(req.text, len(delta), seq.params.stop)
        if hit is not None:
            i, stop = hit
            end = i + len(stop) if seq.params.include_stop_str_in_output else i
            req.new_text = delta[: max(0, len(delta) - (len(req.text) - end))]
            req.text = req.text[:end]
            if not seq.is_finished:
                self.scheduler.finish(seq.seq_id, FinishReason.STOP, now)
            seq.finish_reason = FinishReason.STOP
        elif not seq.is_finished and seq.num_tokens >= self.max_model_len:
            self.scheduler.finish(seq.seq_id, FinishReason.LENGTH, now)

    def _output(self, req: _Request) -> RequestOutput:
        seq = req.seq
        return RequestOutput(
            request_id=seq.seq_id,
            prompt=req.prompt,
            prompt_token_ids=list(seq.prompt_token_ids),
            token_ids=list(seq.output_token_ids),
            text=req.text,
            finished=seq.is_finished,
            finish_reason=seq.finish_reason.value if seq.finish_reason else None,
            lifecycle=seq.lifecycle,
            new_text=req.new_text,
        )
