"""Offline generation throughput: dsbox's ``LLM.generate`` against transformers' ``generate``.

Both run the same opt-125m-shaped model with the same random weights (a dummy checkpoint
written once by transformers to a temporary directory and loaded by both), on the same
prompts (token ids, by the bundled GPT-2 BPE tokenizer: by default real ShareGPT prompts of
at most 512 tokens; ``--workload corpus`` takes windows of stdlib docstrings with lengths
uniform in [min-len, max-len]), the same ``max_tokens`` and greedy decoding with EOS
ignored, so both make exactly ``num_prompts * max_tokens`` tokens. transformers gets the
prompts left-padded in ``--hf-batches`` batches. Each side is warmed up, then both are
timed ``--repeats`` times, alternating, and the best run of each counts (the dev box is
shared: the best run is the one least disturbed).

    .venv/bin/python benchmarks/offline_throughput.py            # the BENCHMARKS.md figures
    .venv/bin/python benchmarks/offline_throughput.py --profile  # + cProfile of dsbox's run

Prints the tokens/s of each and the ratio dsbox / transformers.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from dsbox import LLM, SamplingParams
from dsbox.config import get_model_spec
from dsbox.engine.model.tokenizer import bundled_tokenizer, save_tokenizer_files


def corpus_ids() -> list[int]:
    """A few thousand tokens of English text (docstrings of stdlib modules), tokenized."""
    import argparse as m1
    import collections as m2
    import dataclasses as m3
    import json as m4
    import pathlib as m5
    import random as m6
    import statistics as m7
    import subprocess as m8
    import threading as m9
    import typing as m10

    mods = (m1, m2, m3, m4, m5, m6, m7, m8, m9, m10)
    text = "\n\n".join(inspect.getdoc(m) or "" for m in mods)
    for m in mods:  # plus the docstrings of their public callables, for length
        for name in sorted(dir(m)):
            obj = getattr(m, name)
            if not name.startswith("_") and callable(obj) and inspect.getdoc(obj):
                text += "\n\n" + inspect.getdoc(obj)
    return bundled_tokenizer().encode(text, add_bos=False)


def make_prompts(n: int, min_len: int, max_len: int, seed: int) -> list[list[int]]:
    """``n`` prompts (BOS + a window of the corpus) with lengths spread over [min, max]."""
    ids = corpus_ids()
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        start = rng.randrange(0, len(ids) - length)
        prompts.append([2] + ids[start: start + length - 1])
    return prompts


def sharegpt_prompts(n: int, max_len: int, seed: int) -> list[list[int]]:
    """``n`` real ShareGPT prompts (DistServe's rule, dsbox.workloads) of at most ``max_len``
    tokens, sampled with ``seed``, tokenized by the bundled tokenizer (BOS first)."""
    from dsbox.workloads import load_workload

    tok = bundled_tokenizer()
    fitting = [r for r in load_workload("sharegpt", tok) if r.num_prompt_tokens <= max_len]
    picked = random.Random(seed).sample(fitting, n)
    return [tok.encode(r.prompt)[:max_len] for r in picked]


def write_dummy_checkpoint(dest: Path, model_name: str, seed: int):
    """A randomly initialised transformers OPT of the registry model's shapes, saved with
    ``save_pretrained``; returns the in-memory transformers model too."""
    from transformers import OPTConfig, OPTForCausalLM

    cfg = get_model_spec(model_name).to_hf_config()
    cfg.pop("model_type")
    cfg.pop("architectures")
    torch.manual_seed(seed)
    hf = OPTForCausalLM(OPTConfig(**cfg)).eval()
    hf.save_pretrained(dest, safe_serialization=True)
    save_tokenizer_files(dest)
    return hf


def run_dsbox(llm: LLM, prompts: list[list[int]], max_tokens: int
              ) -> tuple[float, float, list[list[int]]]:
    """(wall seconds, seconds until the last first token, tokens of each prompt)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    t0, m0 = time.perf_counter(), time.monotonic()
    outs = llm.generate(prompts, params)
    wall = time.perf_counter() - t0
    prefill = max(o.lifecycle.token_times[0] for o in outs) - m0
    return wall, prefill, [o.token_ids for o in outs]


def run_hf(hf, prompts: list[list[int]], max_tokens: int, num_batches: int
           ) -> tuple[float, list[list[int]]]:
    """Left-padded batched greedy ``generate``, EOS ignored (min_new_tokens = max)."""
    pad = 1
    size = -(-len(prompts) // num_batches)
    results: list[list[int]] = []
    t0 = time.perf_counter()
    for b in range(0, len(prompts), size):
        chunk = prompts[b: b + size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                              min_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
        results.extend(out[:, width:].tolist())
    return time.perf_counter() - t0, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="opt-125m", help="registry model whose shapes to use")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--min-len", type=int, default=16, help="shortest prompt, tokens")
    ap.add_argument("--max-len", type=int, default=None,
                    help="longest prompt, tokens (default: 512 for sharegpt, 256 for corpus)")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens generated per prompt")
    ap.add_argument("--hf-batches", type=int, default=1,
                    help="transformers runs the prompts in this many left-padded batches")
    ap.add_argument("--repeats", type=int, default=2,
                    help="timed runs of each side, alternating; the best of each counts")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads for both sides (default: torch's, one per core; "
                         "1 is steadiest on a busy machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", choices=("sharegpt", "corpus"), default="sharegpt",
                    help="corpus: windows of stdlib docstrings with lengths uniform in "
                    "[min-len, max-len]; sharegpt: real ShareGPT prompts of at most max-len "
                    "tokens (their natural, long-tailed length mix)")
    ap.add_argument("--skip-hf", action="store_true", help="time dsbox only")
    ap.add_argument("--profile", action="store_true",
                    help="also print a cProfile of dsbox's timed run (top 25 by cumtime)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.max_len is None:
        args.max_len = 512 if args.workload == "sharegpt" else 256
    if args.workload == "sharegpt":
        prompts = sharegpt_prompts(args.num_prompts, args.max_len, args.seed)
    else:
        prompts = make_prompts(args.num_prompts, args.min_len, args.max_len, args.seed)
    n_prompt = sum(len(p) for p in prompts)
    n_gen = len(prompts) * args.max_tokens
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model} "
          f"shapes, dummy weights, float32 on CPU")
    lens = [len(p) for p in prompts]
    print(f"{len(prompts)} {args.workload} prompts, {n_prompt} prompt tokens (lengths "
          f"{min(lens)}..{max(lens)}), max_tokens {args.max_tokens}, EOS ignored, greedy")

    with tempfile.TemporaryDirectory(prefix="dsbox-bench-") as tmp:
        hf = write_dummy_checkpoint(Path(tmp), args.model, args.seed)
        llm = LLM(model=tmp, dtype="float32", device="cpu")
        run_dsbox(llm, prompts[:2], 4)  # warm-up
        if not args.skip_hf:
            run_hf(hf, prompts[:2], 4, 1)
        prof = cProfile.Profile() if args.profile else None
        ds_times, hf_times = [], []
        for r in range(args.repeats):  # alternate, so both sides see the same machine
            if prof is not None and r == 0:
                prof.enable()
            ds_time, ds_prefill, ds_tokens = run_dsbox(llm, prompts, args.max_tokens)
            if prof is not None and r == 0:
                prof.disable()
            assert sum(map(len, ds_tokens)) == n_gen
            ds_times.append(ds_time)
            print(f"run {r}: dsbox        {ds_time:7.2f} s  {n_gen / ds_time:7.1f} tokens/s "
                  f"(prefill phase {ds_prefill:.2f} s)", flush=True)
            if args.skip_hf:
                continue
            hf_time, hf_tokens = run_hf(hf, prompts, args.max_tokens, args.hf_batches)
            hf_times.append(hf_time)
            print(f"run {r}: transformers {hf_time:7.2f} s  {n_gen / hf_time:7.1f} tokens/s",
                  flush=True)
        ds_tps = n_gen / min(ds_times)
        print(f"dsbox        : {ds_tps:8.1f} generated tokens/s (best of {args.repeats})")
        if hf_times:
            hf_tps = n_gen / min(hf_times)
            same = sum(a == b for a, b in zip(ds_tokens, hf_tokens, strict=True))
            print(f"transformers : {hf_tps:8.1f} generated tokens/s (best of {args.repeats}; "
                  f"{args.hf_batches} left-padded batch(es))")
            print(f"ratio dsbox / transformers: {ds_tps / hf_tps:.2f}x  "
                  f"(greedy outputs identical for {same}/{len(prompts)} prompts)")
    if prof is not None:
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
