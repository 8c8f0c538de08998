"""Pipeline-parallel decode: micro-batches per round and TPOT (issue #14, item 1).

Usage::

    .venv/bin/python benchmarks/pp_decode.py              # 1000 requests per rate
    .venv/bin/python benchmarks/pp_decode.py --requests 200
    .venv/bin/python benchmarks/pp_decode.py --ray-overhead   # DistServe's per-step cost

OPT-66B on the built-in a100-80g profile, ``prefill:tp=4;decode:tp=2,pp=2`` on one node,
ShareGPT lengths, SLO 0.4 s / 0.1 s, Poisson arrivals at 1, 2, 2.5 and 3 req/s. For each
rate: the mean number of decode steps that end between two consecutive tokens of a
sequence (its own included: micro-batches per round, ``pp`` = 2 is the goal), the p50
TPOT and the SLO attainment. DistServe's simulator gives a p50 TPOT of 61 ms at 1 req/s
on this case (its per-step Ray overhead, 2 ms + 1e-4 ms per context token, included);
``--ray-overhead`` puts that overhead in the profile (``step_overhead``, both kinds) to
compare.
"""

from __future__ import annotations

import argparse
import bisect
import statistics

from dsbox.config.placement import Placement
from dsbox.config.slo import SLO
from dsbox.placement.plan import make_context
from dsbox.placement.profile import StepOverhead
from dsbox.placement.profile_source import load_profile
from dsbox.placement.simulator import simulate

PLACEMENT = "prefill:tp=4;decode:tp=2,pp=2"
RATES = (1.0, 2.0, 2.5, 3.0)


def micro_batches_per_round(lifecycles) -> float:
    ends = sorted({t for lc in lifecycles for t in lc.token_times[1:]})
    counts = [bisect.bisect_right(ends, lc.token_times[k + 1])
              - bisect.bisect_right(ends, lc.token_times[k])
              for lc in lifecycles for k in range(1, len(lc.token_times) - 1)]
    return statistics.fmean(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--ray-overhead", action="store_true",
                        help="add DistServe's per-step overhead: 2 ms + 1e-4 ms per token")
    args = parser.parse_args()
    profile = load_profile("a100-80g", "opt-66b")
    if args.ray_overhead:
        profile.prefill_overhead = profile.decode_overhead = StepOverhead(2.0, 1e-4)
    ctx = make_context("opt-66b", "1x8", SLO(0.4, 0.1), "sharegpt", profile=profile)
    setup = ctx.setup(Placement.parse(PLACEMENT))
    print(f"{PLACEMENT}, opt-66b a100-80g, ShareGPT, SLO 0.4 s / 0.1 s, "
          f"{args.requests} requests, step overhead {profile.decode_overhead.ms:g} ms + "
          f"{profile.decode_overhead.ms_per_token:g} ms/token")
    print("| rate req/s | micro-batches per round | p50 TPOT ms | attainment |")
    print("|---|---|---|---|")
    for rate in RATES:
        result = simulate(setup, ctx.sample.at_rate(rate, args.requests), ctx.slo)
        tpot = statistics.median(lc.tpot for lc in result.lifecycles if lc.tpot is not None)
        print(f"| {rate:g} | {micro_batches_per_round(result.lifecycles):.2f} | "
              f"{tpot * 1e3:.1f} | {result.attainment():.3f} |")


if __name__ == "__main__":
    main()
