"""Tiny random OPT checkpoints in HF format, written by transformers itself."""

from __future__ import annotations

from pathlib import Path

import torch

VARIANTS = {
    "preln": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=128,
                  word_embed_proj_dim=64, do_layer_norm_before=True),
    "postln": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=128,
                   word_embed_proj_dim=32, do_layer_norm_before=False),
}


def hf_config(variant: str):
    from transformers import OPTConfig

    return OPTConfig(vocab_size=50272, max_position_embeddings=2048, init_std=0.2,
                     activation_function="relu", **VARIANTS[variant])


def write_tiny_checkpoint(dest: Path, variant: str = "preln", seed: int = 0) -> Path:
    """Save a random OPTForCausalLM with ``save_pretrained(safe_serialization=True)`` plus the
    bundled tokenizer files; returns the directory."""
    from transformers import OPTForCausalLM

    from dsbox.engine.model.tokenizer import save_tokenizer_files

    torch.manual_seed(seed)
    model = OPTForCausalLM(hf_config(variant)).eval()
    with torch.no_grad():  # non-trivial layer norms, so their loading is checked too
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(dest, safe_serialization=True)
    save_tokenizer_files(dest)
    return Path(dest)


def load_hf(path: Path):
    from transformers import OPTForCausalLM

    return OPTForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
