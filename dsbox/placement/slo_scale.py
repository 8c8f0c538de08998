"""SLOs as a multiple of a profile's own single-request latencies (``--slo-scale``).

The x-axis of DistServe's Figure 8 scales the SLO; here the base is what the profile says
one request alone takes on the smallest instance it has (TP of its smallest fit, no PP):
TTFT base = the prefill of a mean prompt of the workload, TPOT base = a decode step of one
sequence at the workload's mean context (prompt + half the output), both with the
profile's per-step overhead of that kind. ``scale`` 1 is then unreachable under any load,
a few times that is a realistic target; it works for any profile, a CPU one measured by
``dsbox profile`` included, where the paper's presets (hundreds of ms) mean nothing.
"""

from __future__ import annotations

from dsbox.config.slo import DEFAULT_ATTAINMENT, SLO
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import LatencyProfile
from dsbox.placement.workload import RequestSample


def single_request_latencies(profile: LatencyProfile, sample: RequestSample,
                             engine: str | None = None) -> tuple[float, float, int]:
    """TTFT and TPOT (seconds) of one request alone on the profile's smallest TP, and
    that TP."""
    tp = profile.tps(engine)[0]
    lat = InstanceLatency.from_profile(profile, tp, 1, engine)
    prompt = int(round(sample.mean_prompt))
    context = int(round(sample.mean_prompt + sample.mean_output / 2))
    ttft = lat.prefill_time(prompt, prompt * prompt) + lat.prefill_overhead_time(prompt)
    tpot = lat.decode_time(1, context) + lat.decode_overhead_time(context)
    return ttft, tpot, tp


def scaled_slo(profile: LatencyProfile, sample: RequestSample, scale: float,
               engine: str | None = None, attainment: float = DEFAULT_ATTAINMENT) -> SLO:
    """The SLO ``scale`` times the single-request latencies (see the module docstring)."""
    if not scale > 0:
        raise ValueError(f"--slo-scale must be > 0, got {scale!r}")
    ttft, tpot, tp = single_request_latencies(profile, sample, engine)
    name = (f"{scale:g}x single-request latency (TTFT {ttft * 1e3:.3g} ms, TPOT "
            f"{tpot * 1e3:.3g} ms alone on tp={tp})")
    return SLO(ttft * scale, tpot * scale, attainment, name)
