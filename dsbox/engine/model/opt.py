"""The OPT decoder in torch over the paged KV cache (all sizes, opt-350m's post-LN included).

The model knows nothing of parallelism: tensor parallelism shards its Linear layers from
outside (``dsbox.engine.runtime.parallel``); the local head count is read from the q projection's
width. Module names follow HF's ``decoder.*`` so checkpoints load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsbox.config import ModelSpec
from dsbox.engine.model.attention import AttentionBackend, AttentionMetadata

POSITION_OFFSET = 2  # OPT's learned positions start at index 2


class OPTAttention(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        h = spec.hidden_size
        self.head_dim = spec.head_dim
        self.scale = spec.head_dim ** -0.5
        self.q_proj = nn.Linear(h, h)
        self.k_proj = nn.Linear(h, h)
        self.v_proj = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, h)

    def forward(self, x: torch.Tensor, kv_cache: tuple[torch.Tensor, torch.Tensor],
                meta: AttentionMetadata, backend: AttentionBackend) -> torch.Tensor:
        t = x.shape[0]
        q = self.q_proj(x).view(t, -1, self.head_dim)
        k = self.k_proj(x).view(t, -1, self.head_dim)
        v = self.v_proj(x).view(t, -1, self.head_dim)
        out = backend.forward(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale)
        return self.out_proj(out.reshape(t, -1))


class OPTDecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.pre_ln = spec.do_layer_norm_before
        self.self_attn = OPTAttention(spec)
        self.self_attn_layer_norm = nn.LayerNorm(spec.hidden_size)
        self.fc1 = nn.Linear(spec.hidden_size, spec.ffn_dim)
        self.fc2 = nn.Linear(spec.ffn_dim, spec.hidden_size)
        self.final_layer_norm = nn.LayerNorm(spec.hidden_size)

    def forward(self, x, kv_cache, meta, backend):
        residual = x
        if self.pre_ln:
            x = self.self_attn_layer_norm(x)
        x = residual + self.self_attn(x, kv_cache, meta, backend)
        if not self.pre_ln:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.pre_ln:
            x = self.final_layer_norm(x)
        x = residual + self.fc2(F.relu(self.fc1(x)))
        if not self.pre_ln:
            x = self.final_layer_norm(x)
        return x


class OPTDecoder(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.embed_dim)
        self.embed_positions = nn.Embedding(spec.max_position_embeddings + POSITION_OFFSET,
                                            spec.hidden_size)
        if spec.has_projections:
            self.project_in = nn.Linear(spec.embed_dim, spec.hidden_size, bias=False)
            self.project_out = nn.Linear(spec.hidden_size, spec.embed_dim, bias=False)
        else:
            self.project_in = self.project_out = None
        self.final_layer_norm = nn.LayerNorm(spec.hidden_size) if spec.do_layer_norm_before \
            else None
        self.layers = nn.ModuleList(OPTDecoderLayer(spec) for _ in range(spec.num_layers))


class OPTForCausalLM(nn.Module):
    """OPT with a tied LM head. ``forward`` returns hidden states; ``compute_logits`` the
    logits of selected rows (the last token of each sequence)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.decoder = OPTDecoder(spec)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        d = self.decoder
        x = d.embed_tokens(input_ids)
        if d.project_in is not None:
            x = d.project_in(x)
        return x + d.embed_positions(positions + POSITION_OFFSET)

    def run_layers(self, x: torch.Tensor, layers: range, kv_caches, meta: AttentionMetadata,
                   backend: AttentionBackend) -> torch.Tensor:
        """Run decoder layers ``layers`` (a pipeline stage runs a slice of them)."""
        for i in layers:
            x = self.decoder.layers[i](x, kv_caches[i], meta, backend)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        d = self.decoder
        if d.final_layer_norm is not None:
            x = d.final_layer_norm(x)
        if d.project_out is not None:
            x = d.project_out(x)
        return x

    def forward(self, input_ids, positions, kv_caches, meta, backend) -> torch.Tensor:
        x = self.embed(input_ids, positions)
        x = self.run_layers(x, range(len(self.decoder.layers)), kv_caches, meta, backend)
        return self.head(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.decoder.embed_tokens.weight)
