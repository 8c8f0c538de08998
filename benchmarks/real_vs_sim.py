"""Measured against simulated SLO attainment on this machine (``dsbox bench`` issue #11).

For each placement, ``dsbox bench --real --simulate`` replays the same trace at each rate on
the engine here and through the simulator on a profile of this machine (``dsbox profile``),
and the SLO attainments are compared rate by rate.

Two simulated columns are reported:

- ``sim``: the profile as ``dsbox profile`` writes it: the model's step times and the
  runtime's own cost per prefill and per decode step, measured by ``dsbox profile`` on the
  running engine (``step_overhead``);
- ``sim, no overhead`` (a comparison): the same profile with every overhead (prefill,
  decode, KV pull) set to 0, the idealised runtime.

    python benchmarks/real_vs_sim.py --profile profiles/cpu/opt-tiny.json --out bench-out \\
        [--model opt-tiny] [--workload humaneval] [--rates 2,4,8,12] [--num-requests 40] \\
        [--ttft 0.1] [--tpot 0.025] [--placements "colocated:tp=1" "prefill:tp=1;decode:tp=1"] \\
        [--repeats 3]

With ``--repeats N`` each placement's real runs are repeated N times (the whole sweep of
rates each time, so a slow spell of the machine falls on different rates) and the mean
measured attainment is compared; every run's figure is printed too, with how fast the
engine's steps ran during it against the profile (``step_time_vs_profile`` of the bench
JSON: the median of measured over predicted step time; 1.2x: 20% slower than simulated).
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


def without_overhead(profile: dict) -> dict:
    out = copy.deepcopy(profile)
    zero = {"ms": 0.0, "ms_per_token": 0.0, "ms_per_seq": 0.0}
    out["step_overhead"] = {"prefill": dict(zero), "decode": dict(zero)}
    out.pop("step_overhead_ms", None)
    out.pop("step_overhead_ms_per_token", None)
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
    ap.add_argument("--placements", nargs="+",
                    default=["colocated:tp=1", "prefill:tp=1;decode:tp=1"])
    ap.add_argument("--repeats", type=int, default=1, help="real sweeps per placement")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", args.model, "--workload", args.workload, "--ttft", str(args.ttft),
              "--tpot", str(args.tpot), "--num-threads", "1", "--simulate"]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  load average {os.getloadavg()[0]:.1f}; "
          f"{args.model}, {args.workload}, {args.num_requests} requests per rate, SLO TTFT "
          f"{args.ttft * 1e3:g} ms TPOT {args.tpot * 1e3:g} ms")
    profile = json.loads(Path(args.profile).read_text())
    bare = out / "profile-no-overhead.json"
    bare.write_text(json.dumps(without_overhead(profile)))
    kinds = profile.get("step_overhead", {})
    print("profile's runtime overhead per step: " + ", ".join(
        f"{k} {v.get('ms', 0):.3g} ms + {v.get('ms_per_token', 0):.3g} ms/token + "
        f"{v.get('ms_per_seq', 0):.3g} ms/seq"
        for k, v in kinds.items()) if kinds else "profile has no runtime overhead")
    for k, placement in enumerate(args.placements):
        sweeps = [bench([*common, "--placement", placement, "--profile", args.profile,
                         "--real", "--rates", args.rates, "--num-requests",
                         str(args.num_requests)], out / f"run-{k}-{n}.json")
                  for n in range(args.repeats)]
        ideal = bench([*common, "--placement", placement, "--profile", str(bare),
                       "--no-real", "--rates", args.rates, "--num-requests",
                       str(args.num_requests)], out / f"run-{k}-no-overhead.json")
        ideal_by_rate = {r["rate"]: r["slo_attainment"] for r in ideal["runs"]}
        measured: dict[float, list[float]] = {}
        speeds: dict[float, list[float]] = {}
        simulated: dict[float, float] = {}
        for sweep in sweeps:
            for real, sim in pairs(sweep, placement):
                measured.setdefault(real["rate"], []).append(real["slo_attainment"])
                speeds.setdefault(real["rate"], []).append(real.get("step_time_vs_profile")
                                                           or float("nan"))
                simulated[real["rate"]] = sim["slo_attainment"]
        print(f"\n{placement}: load average {os.getloadavg()[0]:.1f}")
        print(f"{'rate':>6} {'measured':>9} {'sim':>7} {'diff pp':>8} "
              f"{'sim, no overhead':>17} {'diff pp':>8}  each run: measured (engine steps "
              "/ profile)")
        for rate, ms in measured.items():
            m, s, f = statistics.fmean(ms), simulated[rate], ideal_by_rate[rate]
            each = " ".join(f"{x:.1%} ({v:.2f}x)" for x, v in zip(ms, speeds[rate],
                                                                    strict=True))
            print(f"{rate:>6g} {m:>9.1%} {s:>7.1%} {(s - m) * 100:>+8.1f} {f:>17.1%} "
                  f"{(f - m) * 100:>+8.1f}  {each}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
