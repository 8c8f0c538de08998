"""Weight loading: every checkpoint layout we accept gives transformers' logits; bad ones fail
with an error that names the file (and the tensor); names resolve offline to local folders
and the HF hub cache; dummy weights have the real shapes; fp16/bf16 load.

Each layout is written from one transformers model (the session's tiny pre-LN checkpoint),
so all of them must reproduce the same reference logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsbox import LLM, SamplingParams
from dsbox.config import get_model_spec
from dsbox.engine.core.scheduler import Phase
from dsbox.engine.core.sequence import Sequence
from dsbox.engine.core.step_batch import build_step_batch
from dsbox.engine.model.source import ModelNotFoundError, resolve_model
from dsbox.engine.model.weights import WeightsError, checkpoint_files
from dsbox.metrics.lifecycle import Lifecycle
from tests.checkpoints import load_hf
from tests.engine.direct import direct

PROMPTS = [[2, 100, 200, 300, 400, 500, 600], [2, 31414, 232], [2] + list(range(1000, 1040))]
SMALL_KV = 4 << 20  # bytes: plenty for these prompts, cheap to allocate
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json",
                   "tokenizer_config.json")


def prefill_logits(llm: LLM, prompts: list[list[int]]) -> list[torch.Tensor]:
    """All-position logits of each prompt, from one prefill step through the paged cache."""
    runner, scheduler = direct(llm)
    seqs = {}
    for i, p in enumerate(prompts):
        seq = Sequence(1000 + i, p, SamplingParams(max_tokens=1, temperature=0),
                       Lifecycle(0.0), eos_token_id=2)
        scheduler.add(seq, 0.0)
        seqs[seq.seq_id] = seq
    out = scheduler.schedule(0.0)
    assert out.phase is Phase.PREFILL and len(out.seqs) == len(prompts)
    logits = runner.logits(build_step_batch(out, seqs)).float()
    for sid in seqs:
        scheduler.abort(sid, 0.0)
    rows, start = [], 0
    for p in prompts:
        rows.append(logits[start:start + len(p)])
        start += len(p)
    return rows


def assert_logits_match(ckpt: Path, reference: list[torch.Tensor], tol: float = 1e-4) -> None:
    llm = LLM(model=str(ckpt), dtype="float32", device="cpu", kv_cache_memory=SMALL_KV)
    for got, ref in zip(prefill_logits(llm, PROMPTS), reference, strict=True):
        diff = (got - ref).abs().max().item()
        assert diff <= tol, f"{ckpt}: max abs diff {diff}"


def copy_config(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def hf_model(preln_ckpt):
    return load_hf(preln_ckpt)


@pytest.fixture(scope="module")
def reference(hf_model):
    with torch.no_grad():
        return [hf_model(torch.tensor([p])).logits[0] for p in PROMPTS]


@pytest.fixture(scope="module")
def state(preln_ckpt):
    """The checkpoint's tensors by their HF names (``model.decoder.*``)."""
    return load_file(str(preln_ckpt / "model.safetensors"))


@pytest.fixture
def no_models(tmp_path, monkeypatch):
    """Point every place weights are looked for at empty temporary folders."""
    models, hub = tmp_path / "dsbox-models", tmp_path / "hf-hub"
    models.mkdir()
    hub.mkdir()
    monkeypatch.setenv("DSBOX_MODELS", str(models))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return models, hub


# --- layouts that load ---------------------------------------------------------------------
def test_single_safetensors_file(preln_ckpt, reference):
    assert checkpoint_files(preln_ckpt) == [preln_ckpt / "model.safetensors"]
    assert_logits_match(preln_ckpt, reference)


def test_sharded_safetensors(hf_model, preln_ckpt, reference, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="200KB")
    copy_config(preln_ckpt, tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    files = checkpoint_files(tmp_path)
    assert len(files) > 1 and all(f.suffix == ".safetensors" for f in files)
    assert_logits_match(tmp_path, reference)


def test_pytorch_bin_fallback(state, preln_ckpt, reference, tmp_path):
    # transformers 5 no longer writes .bin (safe_serialization=False is gone); its old
    # save_pretrained was torch.save of the state dict, lm_head (tied) included
    copy_config(preln_ckpt, tmp_path)
    sd = dict(state)
    sd["lm_head.weight"] = sd["model.decoder.embed_tokens.weight"]
    torch.save(sd, tmp_path / "pytorch_model.bin")
    assert checkpoint_files(tmp_path) == [tmp_path / "pytorch_model.bin"]
    assert_logits_match(tmp_path, reference)


def test_sharded_pytorch_bin(state, preln_ckpt, reference, tmp_path):
    copy_config(preln_ckpt, tmp_path)
    names = sorted(state)
    weight_map = {}
    for k, part in enumerate((names[::2], names[1::2])):
        fname = f"pytorch_model-{k + 1:05d}-of-00002.bin"
        torch.save({n: state[n] for n in part}, tmp_path / fname)
        weight_map.update({n: fname for n in part})
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert len(checkpoint_files(tmp_path)) == 2
    assert_logits_match(tmp_path, reference)


def test_names_without_model_prefix(state, preln_ckpt, reference, tmp_path):
    copy_config(preln_ckpt, tmp_path)
    stripped = {k.removeprefix("model."): v.clone() for k, v in state.items()}
    assert all(k.startswith("decoder.") for k in stripped)
    save_file(stripped, str(tmp_path / "model.safetensors"))
    assert_logits_match(tmp_path, reference)


def test_lm_head_is_tied_to_embeddings(state, preln_ckpt, reference, tmp_path):
    # an explicit lm_head.weight in the checkpoint is ignored: OPT ties it to embed_tokens
    copy_config(preln_ckpt, tmp_path)
    sd = {k: v.clone() for k, v in state.items()}
    sd["lm_head.weight"] = torch.zeros_like(sd["model.decoder.embed_tokens.weight"])
    save_file(sd, str(tmp_path / "model.safetensors"))
    llm = LLM(model=str(tmp_path), dtype="float32", device="cpu", kv_cache_memory=SMALL_KV)
    names = [n for n, _ in llm.client.local_worker().model.named_parameters()]
    assert not any("lm_head" in n for n in names)
    assert_logits_match(tmp_path, reference)


def test_float16_checkpoint_loads_as_float32(state, preln_ckpt, tmp_path):
    """A checkpoint saved in float16 (like the bundled dsbox-chat) runs in float32 with the
    logits transformers computes from the same file in float32."""
    copy_config(preln_ckpt, tmp_path)
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with torch.no_grad():
        hf16 = load_hf(tmp_path)
        reference = [hf16(torch.tensor([p])).logits[0] for p in PROMPTS]
    llm = LLM(model=str(tmp_path), dtype="float32", device="cpu", kv_cache_memory=SMALL_KV)
    assert {p.dtype for p in llm.client.local_worker().model.parameters()} == {torch.float32}
    assert_logits_match(tmp_path, reference)


def test_hf_hub_cache_layout(preln_ckpt, no_models):
    """models--facebook--opt-125m/{blobs, refs/main, snapshots/<rev>/} with symlinked files,
    as huggingface_hub writes it; the folder's config.json gives the shapes."""
    _, hub = no_models
    repo = hub / "models--facebook--opt-125m"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap, blobs = repo / "snapshots" / rev, repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for i, f in enumerate(sorted(preln_ckpt.iterdir())):
        blob = blobs / f"blob{i:04d}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    source = resolve_model("opt-125m")
    assert source.weights_dir == snap and str(snap) in source.where
    assert source.spec.name == "opt-125m" and source.spec.hidden_size == 64
    llm = LLM(model="facebook/opt-125m", dtype="float32", device="cpu",
              kv_cache_memory=SMALL_KV)
    out = llm.generate(["Hello there"], SamplingParams(max_tokens=5, temperature=0,
                                                      ignore_eos=True))[0]
    hf = load_hf(preln_ckpt)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([out.prompt_token_ids]), max_new_tokens=5,
                          min_new_tokens=5, do_sample=False, pad_token_id=1)
    assert out.token_ids == ref[0, len(out.prompt_token_ids):].tolist()


def test_dsbox_models_dir_comes_first(preln_ckpt, no_models):
    models, _ = no_models
    shutil.copytree(preln_ckpt, models / "opt-350m")
    source = resolve_model("opt-350m")
    assert source.weights_dir == models / "opt-350m"
    assert source.tokenizer_dir == models / "opt-350m"


def test_dummy_weights_have_the_real_shapes(no_models):
    spec = get_model_spec("opt-125m")
    with pytest.raises(ModelNotFoundError):
        resolve_model("opt-125m")
    llm = LLM(model="opt-125m", dummy_weights=True, dtype="float32", device="cpu",
              kv_cache_memory=SMALL_KV * 8, max_model_len=256)
    model = llm.client.local_worker().model
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == spec.num_params
    assert params["decoder.embed_tokens.weight"].shape == (50272, 768)
    assert params["decoder.embed_positions.weight"].shape == (2050, 768)
    assert params["decoder.layers.11.fc1.weight"].shape == (3072, 768)
    assert len(model.decoder.layers) == 12
    w = params["decoder.layers.0.self_attn.q_proj.weight"]
    assert not w.is_meta and 0.01 < w.std().item() < 0.03  # random, not zeros
    assert not torch.equal(w, params["decoder.layers.1.self_attn.q_proj.weight"])
    out = llm.generate([[2, 10, 20]], SamplingParams(max_tokens=3, temperature=0,
                                                     ignore_eos=True))[0]
    assert len(out.token_ids) == 3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_loads_and_runs(preln_ckpt, reference, dtype):
    llm = LLM(model=str(preln_ckpt), dtype=dtype, device="cpu", kv_cache_memory=SMALL_KV)
    want = getattr(torch, dtype)
    assert {p.dtype for p in llm.client.local_worker().model.parameters()} == {want}
    assert llm.client.local_worker().runner.kv_pool.dtype == want
    logits = prefill_logits(llm, PROMPTS)
    for got, ref in zip(logits, reference, strict=True):
        assert torch.isfinite(got).all()
        # half precision through 3 layers: close to fp32, nowhere near equal
        assert (got - ref).abs().max().item() < 0.1 * ref.abs().max().item()
    out = llm.generate(["Hello"], SamplingParams(max_tokens=4, temperature=0,
                                                ignore_eos=True))[0]
    assert len(out.token_ids) == 4


# --- errors --------------------------------------------------------------------------------
def test_missing_registry_model_names_the_paths_tried(no_models):
    models, hub = no_models
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("opt-13b")
    msg = str(info.value)
    assert "\n" not in msg
    assert str(models / "opt-13b") in msg
    assert str(hub / "models--facebook--opt-13b") in msg
    assert "facebook/opt-13b" in msg and "--dummy-weights" in msg
    # the engine gives the same error, not a traceback from deeper down
    with pytest.raises(ModelNotFoundError, match="opt-13b"):
        LLM(model="opt-13b", device="cpu")


def test_unknown_name_and_missing_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="known: dsbox-chat, opt-tiny"):
        resolve_model("gpt-17")
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "nope")):
        resolve_model(str(tmp_path / "nope"))


def test_directory_without_weights(preln_ckpt, tmp_path):
    copy_config(preln_ckpt, tmp_path)
    with pytest.raises(WeightsError, match="no weights found") as info:
        LLM(model=str(tmp_path), device="cpu", kv_cache_memory=SMALL_KV)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors_names_the_file(preln_ckpt, tmp_path, damage):
    copy_config(preln_ckpt, tmp_path)
    data = (preln_ckpt / "model.safetensors").read_bytes()
    bad = {"truncated": data[: len(data) // 2], "garbage": b"\x93NOT SAFETENSORS" * 64,
           "empty": b""}[damage]
    (tmp_path / "model.safetensors").write_bytes(bad)
    with pytest.raises(WeightsError) as info:
        LLM(model=str(tmp_path), device="cpu", kv_cache_memory=SMALL_KV)
    assert str(tmp_path / "model.safetensors") in str(info.value)


def test_missing_shard_names_the_index(hf_model, preln_ckpt, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="200KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(WeightsError, match=shard.name) as info:
        LLM(model=str(tmp_path), device="cpu", kv_cache_memory=SMALL_KV)
    assert "model.safetensors.index.json" in str(info.value)


def test_wrong_shape_names_file_and_tensor(state, preln_ckpt, tmp_path):
    copy_config(preln_ckpt, tmp_path)
    sd = {k: v.clone() for k, v in state.items()}
    name = "model.decoder.layers.1.fc1.weight"
    sd[name] = torch.zeros(sd[name].shape[0], sd[name].shape[1] + 1)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError) as info:
        LLM(model=str(tmp_path), device="cpu", kv_cache_memory=SMALL_KV)
    msg = str(info.value)
    assert str(tmp_path / "model.safetensors") in msg and name in msg
    assert "[128, 65]" in msg and "[128, 64]" in msg


def test_missing_tensor_is_named(state, preln_ckpt, tmp_path):
    copy_config(preln_ckpt, tmp_path)
    sd = {k: v.clone() for k, v in state.items() if "layers.2.self_attn.v_proj" not in k}
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"decoder\.layers\.2\.self_attn\.v_proj\.bias"):
        LLM(model=str(tmp_path), device="cpu", kv_cache_memory=SMALL_KV)
