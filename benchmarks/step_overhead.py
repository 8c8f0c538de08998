"""What worker processes add to a decode step, against the in-process engine.

Two measurements, side by side in one run:

1. The step message alone (deterministic, not disturbed by other load): for ``B`` sequences
   in steady decode, the bytes and the pickle + unpickle time of what a worker receives per
   step: the whole batch (every block table and every ``SamplingParams``, as before the lean
   protocol) against the lean protocol's ``StepDelta`` (only what changed).
2. End to end: both sides run the same model (opt-tiny: its steps are so short that the
runtime's own per-step work shows) on ``B`` requests that decode together: the in-process colocated
engine, and a ``prefill:tp=1;decode:tp=1`` placement whose decode instance runs in a
worker process (each step crosses a process boundary both ways). The overhead is the
difference of their median TPOT. The two sides alternate and the best of ``--repeats``
runs counts; on a shared 2-core machine this figure still moves by several ms.

    python benchmarks/step_overhead.py [--batches 8,64,256] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def median_tpot(llm, batch: int, tokens: int) -> float:
    from dsbox import SamplingParams

    prompts = [[2] + [100 + 7 * i + j for j in range(7)] for i in range(batch)]
    outs = llm.generate(prompts, SamplingParams(max_tokens=tokens, temperature=0,
                                                ignore_eos=True))
    return statistics.median(o.lifecycle.tpot for o in outs)


def message_cost(batch: int, steps: int = 200) -> dict[str, tuple[float, float]]:
    """(bytes, microseconds to pickle + unpickle) per step: whole batch vs lean delta."""
    import pickle

    from dsbox.engine.core.block_manager import BlockManager
    from dsbox.engine.core.sampling_params import SamplingParams
    from dsbox.engine.core.scheduler import Scheduler, SchedulerConfig
    from dsbox.engine.core.sequence import Sequence
    from dsbox.engine.core.step_batch import build_step_batch
    from dsbox.engine.runtime.step_protocol import StepEncoder
    from dsbox.metrics.lifecycle import Lifecycle

    sched = Scheduler(SchedulerConfig(max_num_seqs=batch), BlockManager(batch * 64, 16))
    for i in range(batch):
        sched.add(Sequence(i, list(range(100, 100 + 200 + i % 300)),
                           SamplingParams(max_tokens=10**6, temperature=0.8, top_p=0.9,
                                          seed=i, stop=["\n\n"]), Lifecycle(0.0)), 0.0)
    enc = StepEncoder()
    cost = {"whole batch": [0, 0.0], "lean delta": [0, 0.0]}
    for step in range(steps + 1):
        out = sched.schedule(0.0)
        messages = {"whole batch": build_step_batch(out, sched.seqs),
                    "lean delta": enc.encode(out, sched.seqs)}
        for name, msg in messages.items():
            t0 = time.perf_counter()
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)
            if step:  # the first step (prefill) is not steady decode
                cost[name][0] += len(data)
                cost[name][1] += time.perf_counter() - t0
        sched.on_step_done(out, [7] * len(out.seqs), 0.0)
    return {k: (b / steps, s / steps * 1e6) for k, (b, s) in cost.items()}


def main() -> int:
    from dsbox import LLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="8,64,256")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="opt-tiny")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print("step message per worker, steady decode (bytes, pickle + unpickle):")
    for b in batches:
        cost = message_cost(b)
        print(f"  batch {b:>4}: " + "; ".join(f"{k} {n / 1024:.1f} KiB {us:.0f} us"
                                              for k, (n, us) in cost.items()))
    common = dict(model=args.model, dummy_weights=True, device="cpu", dtype="float32",
                  kv_cache_memory=256 << 20, max_num_seqs=max(batches))
    best: dict[tuple[str, int], float] = {}
    with LLM(**common) as local, LLM(placement="prefill:tp=1;decode:tp=1", **common) as disagg:
        for b in batches:  # warm-up
            median_tpot(local, b, 4)
            median_tpot(disagg, b, 4)
        for _ in range(args.repeats):
            for b in batches:
                for name, llm in (("in-process", local), ("workers", disagg)):
                    t = median_tpot(llm, b, args.tokens)
                    best[(name, b)] = min(best.get((name, b), float("inf")), t)
    print(f"{time.strftime('%Y-%m-%d')}  {args.model}, {args.tokens} tokens per request, "
          f"best of {args.repeats}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"{'batch':>6} {'in-process TPOT':>16} {'workers TPOT':>13} {'overhead':>9}")
    for b in batches:
        local_t, worker_t = best[("in-process", b)], best[("workers", b)]
        print(f"{b:>6} {local_t * 1e3:>13.2f} ms {worker_t * 1e3:>10.2f} ms "
              f"{(worker_t - local_t) * 1e3:>6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
