"""The probes of ``scripts/gpu_check.py``, one function each: ``probe(log) -> dict``.

Each runs in its own process on a CUDA machine. It returns a JSON-able dict; ``summary``
(a list of short lines) goes into summary.txt, ``ok`` (default True) marks it passed, and
anything raised makes it fail with the traceback recorded. Only what the GPU machine has is
used: torch, triton, transformers, pytest, nvidia-ml-py; nothing is installed.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 1e-4}


def _sync():
    import torch

    torch.cuda.synchronize()


def _timed(fn) -> tuple[object, float]:
    _sync()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - t0


def _rel_err(out, ref) -> float:
    ref = ref.float()
    return float((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


# --- env -------------------------------------------------------------------------------------
def probe_env(log) -> dict:
    import torch

    info = {"python": platform.python_version(), "executable": sys.executable,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    for module in ("triton", "transformers", "pytest", "pynvml"):
        try:
            info[module] = getattr(__import__(module), "__version__", "present")
        except Exception as exc:
            info[module] = f"missing ({type(exc).__name__})"
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception as exc:
        info["driver"] = f"unknown ({type(exc).__name__})"
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                        "memory_GiB": round(p.total_memory / 2**30, 1),
                        "sms": p.multi_processor_count,
                        "L2_MiB": round(getattr(p, "L2_cache_size", 0) / 2**20, 1)})
    info["devices"] = devices
    free, total = torch.cuda.mem_get_info(0)
    info["free_GiB"] = round(free / 2**30, 1)
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                     capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        info["git"] = None
    import dsbox.kernels  # without textual/fastapi: the engine and kernels must import
    import dsbox.placement  # noqa: F401
    from dsbox import LLM  # noqa: F401

    info["dsbox_imports"] = "ok"
    for k, v in info.items():
        log(f"{k}: {v}")
    d0 = devices[0]
    info["summary"] = [
        f"driver {info['driver']}, torch {info['torch']} (CUDA {info['torch_cuda']}), "
        f"triton {info['triton']}, python {info['python']}",
        f"{len(devices)} x {d0['name']} sm_{d0['capability'].replace('.', '')}, "
        f"{d0['memory_GiB']} GiB ({info['free_GiB']} free), {d0['sms']} SMs, "
        f"L2 {d0['L2_MiB']} MiB; TRITON_INTERPRET={info['TRITON_INTERPRET']}",
    ]
    return info


# --- kernels against references ----------------------------------------------------------
def _paged(lens, heads, head_dim, block_size, dtype, device, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    per_seq = [-(-n // block_size) for n in lens]
    num_blocks = sum(per_seq) + 1
    perm = torch.randperm(num_blocks, generator=gen)
    width = max(per_seq)
    tables = torch.full((len(lens), width), int(perm[-1]), dtype=torch.int32)
    k = torch.randn(num_blocks, block_size, heads, head_dim, generator=gen).to(dtype)
    v = torch.randn(num_blocks, block_size, heads, head_dim, generator=gen).to(dtype)
    nxt = 0
    for b, n in enumerate(per_seq):
        tables[b, :n] = perm[nxt:nxt + n]
        nxt += n
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    return k.to(device), v.to(device), tables.to(device), seq_lens.to(device)


def _kernel_case(dtype, head_dim: int, first_calls: dict) -> dict:
    """Every kernel once against its reference at one dtype / head_dim (first call timed:
    it compiles)."""
    import torch

    from dsbox.kernels.decode_attention import decode_attention, decode_attention_ref
    from dsbox.kernels.kv_copy import copy_blocks, copy_blocks_ref
    from dsbox.kernels.kv_write import write_kv, write_kv_ref
    from dsbox.kernels.prefill_attention import prefill_attention, prefill_attention_ref

    dev, name = "cuda", str(dtype).removeprefix("torch.")
    lens, q_lens, heads = [1, 100, 1025, 2000], [1, 100, 200, 2000], 8
    k, v, tables, seq_lens = _paged(lens, heads, head_dim, 16, dtype, dev)
    scale = head_dim**-0.5
    errs = {}
    q = torch.randn(sum(q_lens), heads, head_dim, device=dev).to(dtype)
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32,
                      device=dev)
    ref = prefill_attention_ref(q, k, v, cu, seq_lens, tables, scale, torch.empty_like(q))
    out, s = _timed(lambda: prefill_attention(q, k, v, cu, seq_lens, tables, scale,
                                              torch.full_like(q, float("nan")),
                                              max_q_len=max(q_lens)))
    first_calls[f"prefill {name} d{head_dim}"] = s
    errs["prefill"] = _rel_err(out, ref)
    qd = torch.randn(len(lens), heads, head_dim, device=dev).to(dtype)
    ref = decode_attention_ref(qd, k, v, tables, seq_lens, scale, torch.empty_like(qd))
    for splits in (1, 4):
        out, s = _timed(lambda sp=splits: decode_attention(
            qd, k, v, tables, seq_lens, scale, torch.full_like(qd, float("nan")),
            num_splits=sp))
        first_calls[f"decode {name} d{head_dim} splits={splits}"] = s
        errs[f"decode/{splits}"] = _rel_err(out, ref)
    key = torch.randn(64, heads, head_dim, device=dev).to(dtype)
    slots = torch.randperm(k.shape[0] * 16, device=dev)[:64]
    kc, vc, kr, vr = k.clone(), v.clone(), k.clone(), v.clone()
    write_kv_ref(key, key, kr, vr, slots)
    _, s = _timed(lambda: write_kv(key, key, kc, vc, slots))
    first_calls[f"write_kv {name} d{head_dim}"] = s
    errs["write_kv"] = float(not (torch.equal(kc, kr) and torch.equal(vc, vr)))
    pool = torch.stack([torch.stack([k, v])] * 2)  # [2 layers, 2, blocks, bs, h, d]
    dst, want = torch.zeros_like(pool), torch.zeros_like(pool)
    pairs = [(3, 0), (4, 1), (0, 5)]
    copy_blocks_ref(pool, want, pairs)
    pairs_dev = torch.tensor(pairs, dtype=torch.int32, device=dev)
    _, s = _timed(lambda: copy_blocks(pool, dst, pairs_dev))
    first_calls[f"copy_blocks {name} d{head_dim}"] = s
    errs["copy_blocks"] = float(not torch.equal(dst, want))
    good = all(e <= TOL[name] for e in errs.values())
    return {"dtype": name, "head_dim": head_dim, "errors": errs, "ok": good}


def probe_kernels(log) -> dict:
    import torch

    import dsbox.kernels as K

    mode = K.load_kernels("cuda")
    from dsbox.kernels.launch_keys import compiled_variants, kernel_objects

    types = {n: type(k).__name__ for n, k in kernel_objects().items()}
    log(f"mode {mode}, kernel objects {types}")
    ok = mode == "compiled" and all(t == "JITFunction" for t in types.values())
    rows, first_calls = [], {}
    for dtype, head_dim in ((torch.float16, 128), (torch.bfloat16, 128), (torch.float16, 64),
                            (torch.float32, 80)):
        row = _kernel_case(dtype, head_dim, first_calls)
        rows.append(row)
        ok = ok and row["ok"]
        log(f"{row['dtype']} d{head_dim}: {'ok' if row['ok'] else 'WRONG'} "
            + ", ".join(f"{k} {e:.1e}" for k, e in row["errors"].items()))
    variants = compiled_variants()
    slowest = max(first_calls.items(), key=lambda kv: kv[1])
    return {"ok": ok, "mode": mode, "kernel_types": types, "cases": rows,
            "first_call_s": first_calls, "compiled_variants": variants,
            "summary": [f"kernels {mode} in the main process ({len(types)} JITFunction); "
                        f"{sum(r['ok'] for r in rows)}/{len(rows)} dtype/head_dim cases match "
                        "the references",
                        f"first calls (compile): total {sum(first_calls.values()):.1f} s, "
                        f"slowest {slowest[0]} {slowest[1]:.2f} s; variants {variants}"]}


# --- compile stalls ----------------------------------------------------------------------
def probe_compile_stalls(log) -> dict:
    import tempfile

    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="dsbox-triton-cache-")
    import random

    import torch

    import dsbox.kernels as K

    K.load_kernels("cuda")
    from dsbox.config import get_model_spec
    from dsbox.engine.core.sampling_params import SamplingParams
    from dsbox.engine.core.step_batch import StepBatch
    from dsbox.engine.model.attention import TritonAttention
    from dsbox.engine.model.kv_pool import allocate_pool
    from dsbox.engine.model.runner import ModelRunner
    from dsbox.engine.model.weights import build_model
    from dsbox.kernels.launch_keys import compiled_variants

    dev = torch.device("cuda")
    heads, head_dim, bs = 40, 128, 16  # opt-13b attention, one layer's worth exercised
    num_blocks = 64 * 128 + 1
    spec = get_model_spec("opt-tiny")
    model = build_model(spec, torch.float16, dev, None, dummy_seed=0)
    pool = allocate_pool(spec.num_layers, num_blocks, bs, heads, head_dim, torch.float16, dev)
    pool.zero_()
    runner = ModelRunner(model, pool, bs, TritonAttention(dev), dev, max_decode_batch=256)
    _, warm_s = _timed(runner.warmup)
    after_warmup = compiled_variants()
    log(f"warm-up (fresh Triton cache, compiles included) {warm_s:.2f} s; variants "
        f"{after_warmup}")
    rng = random.Random(0)
    params = SamplingParams(max_tokens=1, temperature=0)
    k_cache, v_cache = runner.kv_caches[0]

    def step(prefill: bool, q_lens: list[int], width: int) -> float:
        n = len(q_lens)
        ctx = [rng.randint(q, width * bs) for q in q_lens]
        tables = tuple(tuple(rng.randrange(num_blocks) for _ in range(width)) for _ in range(n))
        batch = StepBatch(prefill, tuple(range(n)), (5,) * sum(q_lens),
                          tuple(c - q for c, q in zip(ctx, q_lens, strict=True)), tuple(ctx),
                          tables, (params,) * n, (0,) * n)
        t = sum(q_lens)
        q, k, v = (torch.randn(t, heads, head_dim, dtype=torch.float16, device=dev)
                   for _ in range(3))

        def run():
            meta = runner.prepare(batch)[2]
            runner.backend.forward(q, k, v, k_cache, v_cache, meta, 0.088)

        return _timed(run)[1] * 1e3

    decode_ms, prefill_ms = [], []
    for _ in range(40):
        decode_ms.append(step(False, [1] * rng.randint(1, 64), rng.randint(1, 128)))
    for _ in range(8):
        q_lens = [rng.randint(1, 512) for _ in range(rng.randint(1, 4))]
        prefill_ms.append(step(True, q_lens, max(-(-q // bs) for q in q_lens) + rng.randint(0, 9)))
    after_loop = compiled_variants()
    new = {k: after_loop[k] - after_warmup.get(k, 0) for k in after_loop
           if after_loop[k] != after_warmup.get(k, 0)}
    p50 = statistics.median(decode_ms)
    log(f"decode steps: p50 {p50:.3f} ms, max {max(decode_ms):.3f} ms; prefill p50 "
        f"{statistics.median(prefill_ms):.3f} ms, max {max(prefill_ms):.3f} ms; new variants "
        f"after warm-up {new or 'none'}")
    return {"ok": not new, "warmup_s": warm_s, "variants_after_warmup": after_warmup,
            "new_variants_after_warmup": new, "decode_ms": decode_ms, "prefill_ms": prefill_ms,
            "summary": [f"warm-up {warm_s:.1f} s compiles {sum(after_warmup.values())} variants "
                        f"{after_warmup}; 40 decode steps (batch 1-64, width 1-128 blocks) "
                        f"and 8 prefills after it compiled {new or 'nothing'}",
                        f"decode attention per layer: p50 {p50:.3f} ms, max "
                        f"{max(decode_ms):.3f} ms (max/p50 {max(decode_ms) / p50:.1f})"]}


# --- benchmarks --------------------------------------------------------------------------
def _benchmarks():
    sys.path.insert(0, str(ROOT / "benchmarks"))


def probe_kernel_bench(log) -> dict:
    _benchmarks()
    import bench_kernels

    import dsbox.kernels as K

    K.load_kernels("cuda")
    result = bench_kernels.run(quick=True, log=log)
    summary = [f"copy bandwidth {result['copy_GBps']:.0f} GB/s"]
    for r in result["rows"]:
        share = f", {r['share_of_copy']:.0%} of copy" if r["share_of_copy"] else ""
        vs = f", {r['vs_sdpa']:.2f}x SDPA" if r["vs_sdpa"] else ""
        summary.append(f"{r['kernel']} {r['shape']}: {r['ms']:.3f} ms (per call "
                       f"{r['per_call_ms']:.3f}), {r['metric']:.1f} {r['unit']}{share}{vs}")
    result["summary"] = summary
    return result


def probe_kv_pull(log) -> dict:
    _benchmarks()
    import kv_pull_bandwidth

    import dsbox.kernels as K

    K.load_kernels("cuda")
    result = kv_pull_bandwidth.run(prompt_len=1024, requests=8, log=log)
    summary = [f"copy bandwidth {result['copy_GBps']:.0f} GB/s; opt-1.3b KV of 1024 tokens"]
    for r in result["in_process"]:
        summary.append(f"{r['method']} ({r['layout']}): {r['ms']:.3f} ms, {r['GBps_moved']:.0f}"
                       f" GB/s moved = {r['share_of_copy']:.0%} of copy, extra alloc "
                       f"{r['extra_bytes_allocated'] / 2**20:.1f} MiB")
    rt = result.get("runtime")
    if rt:
        mem = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in rt["gpu_memory_bytes"].items())
        summary.append(f"runtime handoff median {rt['handoff_ms_median']:.2f} ms (p90 "
                       f"{rt['handoff_ms_p90']:.2f}); GPU memory: {mem or 'NVML unavailable'}")
    result["summary"] = summary
    return result


# --- end to end --------------------------------------------------------------------------
def _prompts(n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[2] + [rng.randrange(4, 50000) for _ in range(rng.randint(lo, hi))]
            for _ in range(n)]


def probe_tpot(log) -> dict:
    from dsbox import LLM, SamplingParams

    llm = LLM(model="opt-1.3b", dummy_weights=True, dtype="float16", device="cuda",
              kv_cache_memory=8 << 30)
    prompts = _prompts(32, 64, 512)
    params = SamplingParams(max_tokens=64, temperature=0, ignore_eos=True)
    runs = []
    for i in (1, 2):
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params)
        wall = time.perf_counter() - t0
        tpot = [o.lifecycle.tpot * 1e3 for o in outs]
        ttft = [o.lifecycle.ttft * 1e3 for o in outs]
        run = {"wall_s": wall, "tpot_ms_mean": statistics.mean(tpot),
               "tpot_ms_max": max(tpot), "ttft_ms_median": statistics.median(ttft),
               "tokens_per_s": len(prompts) * params.max_tokens / wall}
        runs.append(run)
        log(f"run {i}: wall {wall:.2f} s, TPOT mean {run['tpot_ms_mean']:.2f} ms max "
            f"{run['tpot_ms_max']:.2f} ms, TTFT median {run['ttft_ms_median']:.1f} ms, "
            f"{run['tokens_per_s']:.0f} tok/s")
    llm.close()
    ratio = runs[0]["tpot_ms_mean"] / runs[1]["tpot_ms_mean"]
    return {"runs": runs, "tpot_ratio_run1_over_run2": ratio,
            "summary": [f"opt-1.3b fp16 dummy, 32 prompts x 64 tokens: TPOT mean run 1 "
                        f"{runs[0]['tpot_ms_mean']:.2f} ms, run 2 {runs[1]['tpot_ms_mean']:.2f} "
                        f"ms (ratio {ratio:.2f}; > 1 = compiles or warm-up in run 1); "
                        f"{runs[1]['tokens_per_s']:.0f} tok/s"]}


DISAGG = """
import json, sys, time
from dsbox import SamplingParams
from dsbox.client import open_engine
from dsbox.config import EngineConfig
prompts, max_tokens = json.loads(sys.argv[1]), int(sys.argv[2])
cfg = EngineConfig(model="opt-125m", dummy_weights=True, dtype="float16", device="cuda",
                   kv_cache_memory=1 << 30, attention_backend="triton",
                   placement="prefill:tp=1;decode:tp=1", share_devices=True)
if __name__ == "__main__":
  t0 = time.perf_counter()
  with open_engine(cfg) as ctl:
    t1 = time.perf_counter()
    outs = ctl.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0,
                                                ignore_eos=True))
    result = {"start_s": t1 - t0, "generate_s": time.perf_counter() - t1,
              "transfer_bytes": ctl.stats().kv_bytes_moved,
              "tokens": [o.token_ids for o in outs]}
  print("RESULT " + json.dumps(result))
"""


def _disagg(prompts, max_tokens: int, env: dict, timeout: float) -> dict:
    import json

    res = subprocess.run([sys.executable, "-c", DISAGG, json.dumps(prompts), str(max_tokens)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (res.stderr or res.stdout)[-2500:]
    raise RuntimeError(f"disaggregated run exited {res.returncode}:\n{tail}")


def probe_disagg(log) -> dict:
    from dsbox import LLM, SamplingParams

    prompts, max_tokens = _prompts(8, 8, 300, seed=1), 16
    llm = LLM(model="opt-125m", dummy_weights=True, dtype="float16", device="cuda",
              kv_cache_memory=1 << 30, attention_backend="triton")
    ref = [o.token_ids for o in llm.generate(prompts, SamplingParams(
        max_tokens=max_tokens, temperature=0, ignore_eos=True))]
    llm.close()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    got = _disagg(prompts, max_tokens, env, timeout=100)
    same = sum(a == b for a, b in zip(got["tokens"], ref, strict=True))
    log(f"start {got['start_s']:.1f} s, generate {got['generate_s']:.2f} s, "
        f"{got['transfer_bytes']} KV bytes pulled, {same}/{len(ref)} prompts give the "
        "in-process tokens")
    ok = got["transfer_bytes"] > 0
    return {"ok": ok, **{k: v for k, v in got.items() if k != "tokens"},
            "same_tokens_as_in_process": same, "prompts": len(ref),
            "summary": [f"prefill + decode workers on one GPU (CUDA IPC, Triton compiled in "
                        f"the workers): start {got['start_s']:.1f} s, "
                        f"{got['transfer_bytes'] / 2**20:.1f} MiB pulled, {same}/{len(ref)} "
                        "prompts = in-process greedy tokens"]}


def probe_worker_env(log) -> dict:
    """The leak of issue #15: TRITON_INTERPRET=1 in the environment the workers inherit."""
    prompts = _prompts(2, 8, 40, seed=2)
    env = dict(os.environ, TRITON_INTERPRET="1")
    got = _disagg(prompts, 4, env, timeout=80)
    log(f"with TRITON_INTERPRET=1 inherited: generated in {got['generate_s']:.2f} s")
    return {"generate_s": got["generate_s"],
            "summary": ["TRITON_INTERPRET=1 in the parent: workers still run compiled "
                        f"(generation took {got['generate_s']:.2f} s)"]}


def probe_pytest_gpu(log) -> dict:
    """The gpu-marked tests, and tests/kernels (on CUDA its kernel tests run compiled), with
    pytest's output going to ``pytest_gpu.log`` in the output directory as it runs: a run cut
    short by the budget still leaves what it did."""
    import importlib.util
    import re

    files = ["tests/kernels"] + sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text() and "tests/kernels" not in p.as_posix())
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", "-v",
           "-rfE", "--continue-on-collection-errors", *files]
    if importlib.util.find_spec("pytest_timeout"):  # a plugin that loads itself when present
        cmd += ["--timeout=150"]
    log(" ".join(cmd[2:]))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out_dir = Path(os.environ.get("GPU_CHECK_OUT") or ROOT / "gpu-check-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "pytest_gpu.log"
    timeout = max(10.0, float(os.environ.get("GPU_CHECK_BUDGET", "300")) - 15)
    with open(log_path, "w") as f:
        # same process group as this probe: the check's own timeout kills it with the probe
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            returncode, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode, timed_out = proc.wait(), True
    out = log_path.read_text(errors="replace")
    lines = out.strip().splitlines() or [""]
    outcome = {k: len(re.findall(rf" {k}( |$)", out, re.M))
               for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    counts = [ln for ln in lines if re.search(r"\d+ (passed|failed|errors?|skipped)", ln)]
    tail = (counts[-1] if counts else lines[-1])[:200]
    failures = [ln[:200] for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    for ln in failures[:20]:
        log(ln)
    log(f"{'cut short after ' + str(int(timeout)) + ' s; ' if timed_out else ''}{tail}")
    return {"ok": returncode == 0 and not timed_out, "returncode": returncode,
            "timed_out": timed_out, "outcome": outcome, "files": files, "failures": failures,
            "log": str(log_path),
            "summary": [f"pytest ({', '.join(files)}): "
                        + ("CUT SHORT by the budget; " if timed_out else "")
                        + ", ".join(f"{v} {k.lower()}" for k, v in outcome.items() if v)
                        + f" | {tail}"] + [f"  {ln[:150]}" for ln in failures[:8]]}


PROBE_FUNCS = {
    "env": probe_env,
    "kernels": probe_kernels,
    "compile_stalls": probe_compile_stalls,
    "kernel_bench": probe_kernel_bench,
    "kv_pull": probe_kv_pull,
    "tpot": probe_tpot,
    "disagg": probe_disagg,
    "worker_env": probe_worker_env,
    "pytest_gpu": probe_pytest_gpu,
}
