"""`make gpu-check`: what the first lent GPU runs, in one go, in about five minutes.

Each probe (``scripts/gpu_probes.py``) runs in its own process with its own time budget, so
a hang, a crash or an out-of-memory in one costs only that probe: versions and devices;
compiled (not interpreted) kernels against their references; compile stalls over varied
batches and block-table widths; the kernel benchmark; the KV pull benchmark with
per-process memory; opt-1.3b (dummy weights, fp16) generating twice, TPOT compared; a
disaggregated generation on one GPU through CUDA IPC (and again with TRITON_INTERPRET=1 in
the environment the workers inherit); the gpu-marked tests. Progress is printed as it goes;
``summary.txt`` and ``gpu_check.json`` are (re)written into the output directory (``--out``,
else ``$OUT``, else ``./gpu-check-out``) after every probe, so they exist whatever happens.

Without CUDA it prints one line, ``no CUDA: ...``, and exits 0.

    python3 scripts/gpu_check.py [--out DIR] [--budget 450] [--only kernels,kv_pull]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name, seconds it may take at most, most telling first (the whole run is also capped by
# --budget: a probe gets at most what is left)
PROBES = [
    ("env", 40),
    ("kernels", 120),
    ("compile_stalls", 90),
    ("kernel_bench", 120),
    ("kv_pull", 120),
    ("disagg", 120),
    ("tpot", 120),
    ("pytest_gpu", 300),
    ("worker_env", 90),
]
MIN_PROBE_S = 20  # a probe is skipped when less than this is left


def cuda_status() -> tuple[bool, str]:
    """(usable, one line saying what was found)."""
    try:
        import torch
    except Exception as exc:  # torch missing or broken: there is no CUDA to check either
        return False, f"torch is not importable ({type(exc).__name__}: {exc})"
    if not torch.cuda.is_available():
        return False, (f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no "
                       "CUDA device; nothing to check")
    return True, f"{torch.cuda.device_count()} device(s), {torch.cuda.get_device_name(0)}"


def out_dir(arg: str | None) -> Path | None:
    chosen = arg or os.environ.get("OUT")
    return Path(chosen) if chosen else None


def write_reports(out: Path, header: dict, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"header": header, "probes": records},
                                                   indent=1, default=str))
    lines = [f"dsbox gpu-check  {header.get('started', '')}  ({header.get('cuda', '')})"]
    for rec in records:
        lines.append(f"[{rec['status']:>7}] {rec['name']:<15} {rec['seconds']:6.1f} s")
        for line in rec.get("summary", []):
            lines.append(f"            {line}")
        if rec.get("error"):
            lines.extend(f"            ! {line}" for line in rec["error"].strip().splitlines()[-6:])
    (out / "summary.txt").write_text("\n".join(lines) + "\n")


def run_probe(name: str, budget: float, work: Path, out: Path) -> dict:
    """Run one probe in a child process (its own session: a timeout kills its workers too)."""
    result_file = work / f"{name}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-u", str(Path(__file__).resolve()), "--probe", name,
           "--result", str(result_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", GPU_CHECK_OUT=str(out),
               GPU_CHECK_BUDGET=str(int(budget)),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    status = None
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        status = "timeout"
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    seconds = time.monotonic() - start
    rec = {"name": name, "seconds": seconds, "budget": budget, "exit_code": proc.returncode}
    if result_file.exists():
        data = json.loads(result_file.read_text())
        rec.update(data)
        rec["status"] = status or ("ok" if data.get("ok") else "fail")
    else:
        rec["status"] = status or "crashed"
        rec["error"] = (f"timed out after {budget:.0f} s" if status == "timeout"
                        else f"exited with code {proc.returncode} before writing a result")
    return rec


def child_main(name: str, result_file: Path) -> int:
    """In the probe's own process: run it, write {"ok", "result", "summary", "error"}."""
    import traceback

    from scripts.gpu_probes import PROBE_FUNCS

    def log(msg: str) -> None:
        print(f"  [{name}] {msg}", flush=True)

    data: dict = {"ok": False}
    try:
        result = PROBE_FUNCS[name](log)
        data = {"ok": bool(result.pop("ok", True)), "summary": result.pop("summary", []),
                "result": result}
    except BaseException as exc:  # every failure becomes a record, never a lost probe
        data = {"ok": False, "error": f"{type(exc).__name__}: {exc}\n"
                                      f"{traceback.format_exc()[-3000:]}"}
        log(f"FAILED: {type(exc).__name__}: {str(exc)[:300]}")
    result_file.write_text(json.dumps(data, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="where summary.txt and gpu_check.json go (default $OUT)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run")
    ap.add_argument("--only", help="comma-separated probe names")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return child_main(args.probe, Path(args.result))

    usable, what = cuda_status()
    out = out_dir(args.out)
    header = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cuda": what,
              "python": sys.executable}
    if not usable:
        print(f"no CUDA: {what}", flush=True)
        if out is not None:
            write_reports(out, header, [])
        return 0
    out = out or ROOT / "gpu-check-out"
    wanted = set(args.only.split(",")) if args.only else None
    probes = [(n, b) for n, b in PROBES if wanted is None or n in wanted]
    print(f"gpu-check: {what}; {len(probes)} probes, budget {args.budget:.0f} s; reports in "
          f"{out}", flush=True)
    deadline = time.monotonic() + args.budget
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        for i, (name, budget) in enumerate(probes, 1):
            left = deadline - time.monotonic()
            if left < MIN_PROBE_S:
                records.append({"name": name, "status": "skipped", "seconds": 0.0,
                                "error": f"out of time ({left:.0f} s left of the budget)"})
                print(f"== [{i}/{len(probes)}] {name}: skipped, out of time", flush=True)
                continue
            limit = min(budget, left)
            print(f"== [{i}/{len(probes)}] {name} (up to {limit:.0f} s)", flush=True)
            rec = run_probe(name, limit, Path(work), out)
            records.append(rec)
            print(f"-- {name}: {rec['status']} in {rec['seconds']:.1f} s", flush=True)
            write_reports(out, header, records)
    write_reports(out, header, records)
    print((out / "summary.txt").read_text(), end="", flush=True)
    failed = [r["name"] for r in records if r["status"] != "ok"]
    print(f"gpu-check: {len(records) - len(failed)}/{len(records)} probes ok"
          + (f"; not ok: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
