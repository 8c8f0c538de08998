"""Measured against simulated SLO attainment on this machine (``dsbox bench`` issue #11).

For each placement, ``dsbox bench --real --simulate`` replays the same trace at each rate on
the engine here and through the simulator on a profile of this machine (``dsbox profile``),
and the SLO attainments are compared rate by rate.

Two simulated columns are reported:

- ``sim``: the profile as ``dsbox profile`` writes it (model step times only);
- ``sim+overhead``: the same profile with the serving runtime's own cost per step folded into
  the fits' constant terms (prefill ``a`` and decode ``a``), measured beforehand by a separate
  calibration run (another seed, a low rate, each placement): the median over its requests
  of measured minus simulated TTFT (one prefill step) and TPOT (one decode step). This is
  what the profile's per-step overhead (``step_overhead_ms``) stands for; ``dsbox profile``
  leaves that 0, and one constant cannot carry a prefill and a decode overhead that differ,
  so they are folded into the two fits' ``a`` here.

    python benchmarks/real_vs_sim.py --profile profiles/cpu/opt-tiny.json --out bench-out \\
        [--model opt-tiny] [--workload humaneval] [--rates 2,4,8,12] [--num-requests 40] \\
        [--ttft 0.1] [--tpot 0.025] [--placements "colocated:tp=1" "prefill:tp=1;decode:tp=1"]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DSBOX = [sys.executable, "-m", "dsbox"]


def bench(args: list[str], out: Path) -> dict:
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    cmd = [*DSBOX, "bench", *args, "--json", str(out), "--goodput-probes", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def pairs(data: dict, placement: str):
    runs = [r for r in data["runs"] if r["placement"] == placement]
    for real in (r for r in runs if r["target"] == "real"):
        sim = next(s for s in runs if s["target"] == "simulated" and s["rate"] == real["rate"])
        yield real, sim


def overheads(data: dict, placement: str) -> tuple[float, float]:
    """Median measured - simulated TTFT and TPOT (ms) over the requests of the lowest rate."""
    real, sim = min(pairs(data, placement), key=lambda p: p[0]["rate"])
    d_ttft, d_tpot = [], []
    for a, b in zip(real["requests"], sim["requests"], strict=True):
        ta, tb = a["token_times"], b["token_times"]
        d_ttft.append((ta[0] - a["arrival"]) - (tb[0] - b["arrival"]))
        if len(ta) > 1:
            d_tpot.append((ta[-1] - ta[0]) / (len(ta) - 1) - (tb[-1] - tb[0]) / (len(tb) - 1))
    return statistics.median(d_ttft) * 1e3, statistics.median(d_tpot) * 1e3


def with_overhead(profile: dict, prefill_ms: float, decode_ms: float) -> dict:
    out = copy.deepcopy(profile)
    for per_tp in out["fits"].values():
        for fit in per_tp.values():
            fit["prefill"][0] += max(0.0, prefill_ms)
            fit["decode_small"][0] += max(0.0, decode_ms)
            fit["decode_large"][0] += max(0.0, decode_ms)
    out.setdefault("provenance", {})["folded_step_overhead_ms"] = {
        "prefill": prefill_ms, "decode": decode_ms}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True, help="a profile of this machine")
    ap.add_argument("--out", default="bench-real-vs-sim")
    ap.add_argument("--model", default="opt-tiny")
    ap.add_argument("--workload", default="humaneval")
    ap.add_argument("--rates", default="2,4,8,12")
    ap.add_argument("--num-requests", type=int, default=40)
    ap.add_argument("--ttft", type=float, default=0.1)
    ap.add_argument("--tpot", type=float, default=0.025)
    ap.add_argument("--calibration-rate", type=float, default=0.5)
    ap.add_argument("--placements", nargs="+",
                    default=["colocated:tp=1", "prefill:tp=1;decode:tp=1"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", args.model, "--workload", args.workload, "--ttft", str(args.ttft),
              "--tpot", str(args.tpot), "--num-threads", "1", "--simulate"]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  load average {os.getloadavg()[0]:.1f}; "
          f"{args.model}, {args.workload}, {args.num_requests} requests per rate, SLO TTFT "
          f"{args.ttft * 1e3:g} ms TPOT {args.tpot * 1e3:g} ms")
    profile = json.loads(Path(args.profile).read_text())
    for k, placement in enumerate(args.placements):
        cal = bench([*common, "--placement", placement, "--profile", args.profile, "--real",
                     "--rates", str(args.calibration_rate), "--num-requests", "12",
                     "--seed", "101"], out / f"calibration-{k}.json")
        o_prefill, o_decode = overheads(cal, placement)
        adjusted = out / f"profile-{k}-overhead.json"
        adjusted.write_text(json.dumps(with_overhead(profile, o_prefill, o_decode)))
        main_run = bench([*common, "--placement", placement, "--profile", args.profile,
                          "--real", "--rates", args.rates, "--num-requests",
                          str(args.num_requests)], out / f"run-{k}.json")
        folded = bench([*common, "--placement", placement, "--profile", str(adjusted),
                        "--no-real", "--rates", args.rates, "--num-requests",
                        str(args.num_requests)], out / f"run-{k}-overhead.json")
        folded_by_rate = {r["rate"]: r["slo_attainment"] for r in folded["runs"]}
        print(f"\n{placement}: runtime overhead per step from calibration: prefill "
              f"{o_prefill:.1f} ms, decode {o_decode:.1f} ms; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'rate':>6} {'measured':>9} {'sim':>7} {'diff pp':>8} {'sim+overhead':>13} "
              f"{'diff pp':>8}")
        for real, sim in pairs(main_run, placement):
            m, s, f = real["slo_attainment"], sim["slo_attainment"], folded_by_rate[real["rate"]]
            print(f"{real['rate']:>6g} {m:>9.1%} {s:>7.1%} {(s - m) * 100:>+8.1f} {f:>13.1%} "
                  f"{(f - m) * 100:>+8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
