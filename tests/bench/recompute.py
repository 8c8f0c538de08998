"""The bench's summary recomputed from a run's raw per-request stamps in its JSON, with
plain Python (no dsbox code, no numpy), to check the figures the bench reports."""

from __future__ import annotations

import math

import pytest


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "mean": sum(values) / len(values),
            "median": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99)}


def recompute(run: dict, slo: dict, scale: float = 1.0) -> dict:
    """TTFT, TPOT, ITL, E2E summaries, attainment, goodput and token totals of a run."""
    reqs = run["requests"]
    done = [r for r in reqs if r["finish_reason"] in ("stop", "length")]
    ttft = [r["token_times"][0] - r["arrival"] for r in done]
    tpot = [(r["token_times"][-1] - r["token_times"][0]) / (len(r["token_times"]) - 1)
            for r in done if len(r["token_times"]) > 1]
    itl = [b - a for r in done
           for a, b in zip(r["token_times"], r["token_times"][1:], strict=False)]
    e2e = [r["finish"] - r["arrival"] for r in done]

    def met(r) -> bool:
        t = r["token_times"]
        if r["finish_reason"] not in ("stop", "length") or not t:
            return False
        one = 0.0 if len(t) == 1 else (t[-1] - t[0]) / (len(t) - 1)
        return t[0] - r["arrival"] <= slo["ttft"] * scale and one <= slo["tpot"] * scale

    judged = [r for r in reqs if r["finish_reason"] != "abort"]
    num_met = sum(met(r) for r in judged)
    duration = max(r["finish"] for r in reqs) - min(r["arrival"] for r in reqs)
    return {"ttft": summarize(ttft), "tpot": summarize(tpot), "itl": summarize(itl),
            "e2e": summarize(e2e), "num_met": num_met,
            "slo_attainment": num_met / len(judged), "goodput": num_met / duration,
            "duration_s": duration, "num_completed": len(done),
            "prompt_tokens": sum(r["num_prompt_tokens"] for r in done),
            "output_tokens": sum(r["num_output_tokens"] for r in done)}


def check_run(run: dict, slo: dict) -> None:
    """Every figure of ``run`` equals its recomputation from the stamps."""
    got = recompute(run, slo)
    for metric in ("ttft", "tpot", "itl", "e2e"):
        mine, theirs = got[metric], run[metric]
        assert theirs["count"] == mine["count"], metric
        for key in ("mean", "median", "p90", "p99"):
            if mine["count"]:
                assert theirs[key] == pytest.approx(mine[key], rel=1e-9, abs=1e-12), \
                    (metric, key)
    for key in ("num_met", "num_completed", "prompt_tokens", "output_tokens"):
        assert run[key] == got[key], key
    for key in ("slo_attainment", "goodput", "duration_s"):
        assert run[key] == pytest.approx(got[key], rel=1e-9), key
    assert run["goodput_per_gpu"] == pytest.approx(got["goodput"] / run["num_gpus"])
    for point in run["attainment_by_slo_scale"]:
        mine = recompute(run, slo, point["scale"])["slo_attainment"]
        assert point["slo_attainment"] == pytest.approx(mine), point


def check_attainment_never_falls_with_slo_scale(run: dict, slo: dict) -> None:
    """From the JSON's figures and from the stamps, over a fine grid of scales."""
    points = sorted(run["attainment_by_slo_scale"], key=lambda p: p["scale"])
    values = [p["slo_attainment"] for p in points]
    assert values == sorted(values), values
    fine = [recompute(run, slo, 0.1 * k)["slo_attainment"] for k in range(1, 60)]
    assert fine == sorted(fine), fine
