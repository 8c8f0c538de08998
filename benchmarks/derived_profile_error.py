"""How far the analytic (derived) profile lands from the measured A100 fits (item 6).

Usage::

    .venv/bin/python benchmarks/derived_profile_error.py

For every measured (model, TP) of the built-in a100-80g profile (DistServe's OPT-13B and
OPT-66B fits) and each engine: the median and worst relative step-time error of the
derived fit against the measured one over the comparison shapes (prefill: 1, 2 or 4
prompts of 32..2048 tokens; decode: batch 1..256 at 128..2048 tokens of context, within
the KV capacity), calibrated on both models ("in sample") and on the other model only.
Then the calibrated constants.
"""

from __future__ import annotations

from dataclasses import asdict

from dsbox.placement.analytic import calibrate, derivation_error


def main() -> None:
    for engine in ("distserve", "vllm"):
        error = derivation_error(engine)
        print(f"engine {engine}: {error.describe()}")
        print("| model | TP | calibrated on | prefill median | prefill worst | decode median "
              "| decode worst |")
        print("|---|---|---|---|---|---|---|")
        for r in error.rows:
            on = "both" if len(r.calibrated_on) > 1 else r.calibrated_on[0]
            print(f"| {r.model} | {r.tp} | {on} | {r.prefill_median:.1%} | "
                  f"{r.prefill_max:.1%} | {r.decode_median:.1%} | {r.decode_max:.1%} |")
        cal = calibrate(engine)
        for phase in ("prefill", "decode"):
            values = ", ".join(f"{k} {v:.3g}" for k, v in asdict(getattr(cal, phase)).items())
            print(f"{phase}: {values}")
        print()


if __name__ == "__main__":
    main()
