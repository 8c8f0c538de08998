"""ModelRunner: runs one StepBatch through the model over the paged KV pool and samples.

One runner per device. It owns the (possibly sharded) model, the KV pool of that device and
the attention backend; it knows nothing of scheduling.
"""

from __future__ import annotations

import torch

from dsbox.engine.core.step_batch import StepBatch
from dsbox.engine.model.attention import AttentionBackend, AttentionMetadata
from dsbox.engine.model.sampler import sample, token_logprobs


class ModelRunner:
    """Runs a model, or one pipeline stage of it (``layers``), over ``kv_pool``, which holds
    exactly the KV of ``layers``."""

    def __init__(self, model: torch.nn.Module, kv_pool: torch.Tensor, block_size: int,
                 backend: AttentionBackend, device: torch.device, seed: int = 0,
                 layers: range | None = None) -> None:
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

    def prepare(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata,
                                                 torch.Tensor]:
        """Input ids, positions, attention metadata, and the row of each sequence's last
        token."""
        bs = self.block_size
        positions: list[int] = []
        slots: list[int] = []
        for start, ctx, table in zip(batch.starts, batch.context_lens, batch.block_tables,
                                     strict=True):
            for p in range(start, ctx):
                positions.append(p)
                slots.append(table[p // bs] * bs + p % bs)
        q_lens = batch.query_lens
        max_blocks = max(len(t) for t in batch.block_tables)
        tables = [list(t) + [0] * (max_blocks - len(t)) for t in batch.block_tables]
        cu = [0]
        for n in q_lens:
            cu.append(cu[-1] + n)
        dev = self.device
        meta = AttentionMetadata(
            is_prefill=batch.is_prefill,
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(batch.context_lens, dtype=torch.int32, device=dev),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=dev),
            max_q_len=max(q_lens),
            max_seq_len=max(batch.context_lens),
        )
        input_ids = torch.tensor(batch.token_ids, dtype=torch.int64, device=dev)
        pos = torch.tensor(positions, dtype=torch.int64, device=dev)
        last_rows = torch.tensor(cu[1:], dtype=torch.int64, device=dev) - 1
        return input_ids, pos, meta, last_rows

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
