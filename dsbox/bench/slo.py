"""The SLO a bench judges requests by: a preset, the model's registry default, or seconds.

Order: ``--slo`` (a preset such as ``chatbot-13b``, or ``TTFT,TPOT`` in seconds), else the
model's default from the registry, else ``chatbot-13b``; ``--ttft`` / ``--tpot`` then
replace either target; ``--slo-scale`` multiplies both. A request counts as meeting the SLO
only when it meets both targets (the metrics report's rule).
"""

from __future__ import annotations

from dsbox.config import SLO, ModelSpec
from dsbox.config.slo import DEFAULT_ATTAINMENT

FALLBACK_PRESET = "chatbot-13b"
#: SLO scales of the attainment-against-SLO-scale figure (x the chosen SLO).
SLO_SCALES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)


def default_preset(spec: ModelSpec) -> str:
    """The model's default SLO preset: its registry entry's, else ``chatbot-13b``. (The
    one place that reads the registry's default; models without one fall back.)"""
    return getattr(spec, "default_slo", None) or FALLBACK_PRESET


def resolve_slo(spec: ModelSpec, slo: str | None = None, ttft: float | None = None,
                tpot: float | None = None, scale: float = 1.0,
                attainment: float = DEFAULT_ATTAINMENT) -> SLO:
    """The SLO to judge by (see the module docstring). Raises ValueError for bad values."""
    base = SLO.parse(slo if slo is not None else default_preset(spec), attainment=attainment)
    if ttft is not None or tpot is not None:
        base = SLO(ttft if ttft is not None else base.ttft,
                   tpot if tpot is not None else base.tpot, attainment)
    return base if scale == 1.0 else base.scaled(scale)
