"""ModelRunner: runs one StepBatch through the model over the paged KV pool and samples.

One runner per device. It owns the (possibly sharded) model, the KV pool of that device and
the attention backend; it knows nothing of scheduling. A step's inputs reach the device in
one host-to-device copy (:mod:`dsbox.engine.model.step_inputs`).
"""

from __future__ import annotations

import torch

from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.engine.core.step_batch import StepBatch
from dsbox.engine.model.attention import AttentionBackend, AttentionMetadata
from dsbox.engine.model.sampler import sample, token_logprobs
from dsbox.engine.model.step_inputs import prepare_step

WARMUP_PROMPT_TOKENS = 16
WARMUP_SPLIT_TOKENS = 256  # a block table this wide makes decode attention split


class ModelRunner:
    """Runs a model, or one pipeline stage of it (``layers``), over ``kv_pool``, which holds
    exactly the KV of ``layers``. ``max_decode_batch`` (e.g. the scheduler's max_num_seqs)
    preallocates decode attention's workspace, so that a decode step can be captured in a
    CUDA graph; without it the workspace is allocated by the first decode step."""

    def __init__(self, model: torch.nn.Module, kv_pool: torch.Tensor, block_size: int,
                 backend: AttentionBackend, device: torch.device, seed: int = 0,
                 layers: range | None = None, max_decode_batch: int | None = None) -> None:
        self.model = model
        self.kv_pool = kv_pool
        self.block_size = block_size
        self.backend = backend
        self.device = device
        num_layers = model.spec.num_layers
        self.layers = layers if layers is not None else range(num_layers)
        self.is_first = self.layers.start == 0
        self.is_last = self.layers.stop == num_layers
        self.kv_caches: list = [None] * num_layers
        for j, layer in enumerate(self.layers):
            self.kv_caches[layer] = (kv_pool[j, 0], kv_pool[j, 1])
        self.generator = torch.Generator(device=device).manual_seed(seed)
        if max_decode_batch is not None:
            backend.reserve_workspace(max_decode_batch, kv_pool.shape[4], kv_pool.shape[5],
                                      device)

    def prepare(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata,
                                                 torch.Tensor]:
        """Input ids, positions, attention metadata, and the row of each sequence's last
        token (int32 views of one device buffer)."""
        s = prepare_step(batch, self.block_size, self.device)
        return s.input_ids, s.positions, s.meta, s.last_rows

    @torch.inference_mode()
    def execute(self, batch: StepBatch, hidden_in: torch.Tensor | None = None
                ) -> tuple[list[int], list | None] | torch.Tensor:
        """Run the step (this runner's layers). The last stage returns one sampled token per
        sequence and their logprobs (None unless a request asked for them); an earlier
        stage returns the hidden states for the next one, and a later stage takes them as
        ``hidden_in``."""
        input_ids, positions, meta, last_rows = self.prepare(batch)
        model = self.model
        x = model.embed(input_ids, positions) if self.is_first else hidden_in
        x = model.run_layers(x, self.layers, self.kv_caches, meta, self.backend)
        if not self.is_last:
            return x
        logits = model.compute_logits(model.head(x[last_rows]))
        tokens = sample(logits, batch.params, batch.output_index, self.generator)
        return tokens, token_logprobs(logits, batch.params, tokens)

    @torch.inference_mode()
    def logits(self, batch: StepBatch) -> torch.Tensor:
        """All-token logits of a step (for tests against a reference model)."""
        input_ids, positions, meta, _ = self.prepare(batch)
        hidden = self.model(input_ids, positions, self.kv_caches, meta, self.backend)
        return self.model.compute_logits(hidden)

    def warmup_batches(self) -> list[StepBatch]:
        """One step of each kind of launch a step can make: a prefill, a decode whose
        attention runs in one split, one that splits (a wide block table). Block 0 only."""
        wide = -(-WARMUP_SPLIT_TOKENS // self.block_size) + 1
        params = (SamplingParams(max_tokens=1, temperature=0),)

        def step(prefill: bool, tokens: int, width: int) -> StepBatch:
            return StepBatch(is_prefill=prefill, seq_ids=(0,), token_ids=(0,) * tokens,
                             starts=(0,), context_lens=(tokens,), block_tables=((0,) * width,),
                             params=params, output_index=(0,))

        prompt = min(WARMUP_PROMPT_TOKENS, self.block_size)  # fits block 0
        return [step(True, prompt, 1), step(False, 1, 1), step(False, 1, wide)]

    @torch.inference_mode()
    def warmup(self) -> int:
        """Compile, at start-up, every kernel variant steps will need (Triton backend), on
        this runner's own pool and input layout: no step compiles in the middle of decoding.

        Runs attention alone (no collective: each rank may call it on its own) on the first
        layer's cache and writes junk K/V into block 0: call it before the pool holds any
        request's KV. Returns the number of launches made (0 for the torch backend).
        """
        if not self.backend.compiles:
            return 0
        heads, head_dim = self.kv_pool.shape[4], self.kv_pool.shape[5]
        k_cache, v_cache = self.kv_caches[self.layers.start]
        dtype = self.kv_pool.dtype
        launches = 0
        for batch in self.warmup_batches():
            meta = self.prepare(batch)[2]
            t = len(batch.token_ids)
            q, k, v = (torch.randn(t, heads, head_dim, dtype=dtype, device=self.device)
                       for _ in range(3))
            self.backend.forward(q, k, v, k_cache, v_cache, meta, head_dim**-0.5)
            launches += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return launches
