"""Time the placement search (Alg. 1 and Alg. 2) the way ``dsbox plan`` runs it.

Usage::

    .venv/bin/python benchmarks/plan_search.py            # opt-66b on 1x8 and 4x8, both algs
    .venv/bin/python benchmarks/plan_search.py --quick    # 1x8 only
    .venv/bin/python benchmarks/plan_search.py --profile  # + cProfile of the slowest case

Prints one markdown table row per case: model, cluster, algorithm, search seconds,
simulations, chosen unit, per-GPU goodput, colocated per-GPU goodput, ratio. Workload
ShareGPT (bundled tokenizer), default search settings, the built-in a100-80g profile.
The acceptance targets (DistServe's issue): Alg. 2 and Alg. 1 for opt-66b under 10 s on
1x8 and under 60 s on 4x8 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from dsbox.placement.plan import make_context, plan_search

CASES = [
    ("opt-66b", "1x8", "chatbot-66b", "low"),
    ("opt-66b", "1x8", "chatbot-66b", "high"),
    ("opt-66b", "4x8", "chatbot-66b", "low"),
    ("opt-66b", "4x8", "chatbot-66b", "high"),
    ("opt-13b", "1x8", "chatbot-13b", "low"),
]
LIMITS = {"1x8": 10.0, "4x8": 60.0}


def run_case(model: str, cluster: str, slo: str, algorithm: str) -> tuple[str, float]:
    ctx = make_context(model, cluster, slo, "sharegpt")
    start = time.perf_counter()
    result = plan_search(ctx, algorithm)
    seconds = time.perf_counter() - start
    d, c = result.disaggregated, result.colocated
    row = (f"| {model} | {cluster} | {algorithm} | {seconds:.1f} | {result.num_simulations} | "
           f"`{d.unit.format(with_devices=False)}` | {d.goodput_per_gpu:.3f} | "
           f"`{c.unit.format(with_devices=False)}` | {c.goodput_per_gpu:.3f} | "
           f"{result.ratio:.2f} |")
    return row, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1x8 cases only")
    parser.add_argument("--profile", action="store_true", help="cProfile the slowest case")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.quick or c[1] == "1x8"]
    print("| model | cluster | alg | search s | sims | unit | goodput/GPU | colocated unit "
          "| colocated goodput/GPU | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    slowest, worst = None, 0.0
    for case in cases:
        row, seconds = run_case(*case)
        print(row, flush=True)
        limit = LIMITS.get(case[1])
        if case[0] == "opt-66b" and limit and seconds >= limit:
            print(f"  ^ over the {limit:.0f} s target")
        if seconds > worst:
            slowest, worst = case, seconds
    if args.profile and slowest is not None:
        prof = cProfile.Profile()
        prof.runcall(run_case, *slowest)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
