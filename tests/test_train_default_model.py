"""scripts/train_default_model.py at toy size: it writes a checkpoint dsbox loads (HF layout,
OPT special ids, a training record), and the same command gives the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dsbox import LLM, SamplingParams

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_default_model.py"
TOY = ["--steps", "3", "--max-conversations", "300", "--vocab-size", "300",
       "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--ffn-dim", "64",
       "--seq-len", "256", "--batch-size", "2", "--eval-rows", "2", "--warmup-steps", "1",
       "--held-out", "0.1",
       "--tokenizer-chars", "200000", "--sample-tokens", "4", "--threads", "1"]


def train(out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *TOY], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "training.json").read_text())


@pytest.mark.slow
def test_toy_training_is_loadable_and_reproducible(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    record = train(first)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (first / name).is_file(), name
    assert record["steps"] == 3 and record["tokens_trained"] == 3 * 2 * 256
    assert record["data"]["held_out_conversations"] == "[270, 300)"
    assert record["held_out"]["loss"] > 0 and record["wall_seconds"] > 0
    assert "--steps 3" in record["reproduce"] and len(record["samples"]) == 5

    llm = LLM(model=str(first), dtype="float32", device="cpu", kv_cache_memory=1 << 20)
    assert llm.client.spec.vocab_size == 300 and llm.client.spec.max_position_embeddings == 256
    assert (llm.tokenizer.bos_token_id, llm.tokenizer.eos_token_id,
            llm.tokenizer.pad_token_id) == (2, 2, 1)
    out = llm.generate("User: Hi\nAssistant:", SamplingParams(max_tokens=3, temperature=0,
                                                             ignore_eos=True))[0]
    assert len(out.token_ids) == 3

    train(second)
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
