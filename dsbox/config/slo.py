"""SLO: the latency targets a request must meet (TTFT and TPOT) and the attainment goal.

The presets are DistServe's (OSDI'24, Table 1 / section 6.1): per application and model,
the time to first token and the time per output token, both in seconds. Goodput is the
highest request rate at which at least ``attainment`` of the requests meet both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: name -> (TTFT seconds, TPOT seconds), from the DistServe paper.
SLO_PRESETS: dict[str, tuple[float, float]] = {
    "chatbot-13b": (0.25, 0.1),
    "chatbot-66b": (2.5, 0.15),
    "chatbot-175b": (4.0, 0.2),
    "code-66b": (0.125, 0.2),
    "summarization-66b": (15.0, 0.15),
}

DEFAULT_ATTAINMENT = 0.9


@dataclass(frozen=True, slots=True)
class SLO:
    """TTFT and TPOT targets (seconds) and the share of requests that must meet both."""

    ttft: float
    tpot: float
    attainment: float = DEFAULT_ATTAINMENT
    name: str = ""

    def __post_init__(self) -> None:
        for attr in ("ttft", "tpot"):
            value = getattr(self, attr)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"SLO {attr} must be a positive number of seconds, got {value!r}")
        if not 0 < self.attainment <= 1:
            raise ValueError(f"SLO attainment must be in (0, 1], got {self.attainment!r}")

    @classmethod
    def preset(cls, name: str, attainment: float = DEFAULT_ATTAINMENT) -> SLO:
        """One of :data:`SLO_PRESETS` by name (``chatbot-13b``...)."""
        key = name.strip().lower()
        if key not in SLO_PRESETS:
            raise ValueError(f"unknown SLO preset {name!r}; known: {', '.join(SLO_PRESETS)}")
        ttft, tpot = SLO_PRESETS[key]
        return cls(ttft=ttft, tpot=tpot, attainment=attainment, name=key)

    @classmethod
    def parse(cls, text: str, attainment: float = DEFAULT_ATTAINMENT) -> SLO:
        """A preset name, or ``"TTFT,TPOT"`` in seconds (``"0.25,0.1"``)."""
        text = text.strip()
        if "," not in text:
            return cls.preset(text, attainment)
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ValueError(f"SLO {text!r}: expected a preset name or 'TTFT,TPOT' in seconds")
        try:
            ttft, tpot = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"SLO {text!r}: TTFT and TPOT must be numbers of seconds") from None
        return cls(ttft=ttft, tpot=tpot, attainment=attainment)

    def scaled(self, factor: float) -> SLO:
        """Both targets multiplied by ``factor`` (> 1 loosens them)."""
        if not factor > 0:
            raise ValueError(f"SLO scale must be > 0, got {factor!r}")
        name = f"{self.name}x{factor:g}" if self.name else ""
        return SLO(self.ttft * factor, self.tpot * factor, self.attainment, name)

    def met(self, ttft: float | None, tpot: float | None) -> bool:
        """Whether one request with these latencies meets both targets."""
        return ttft is not None and tpot is not None and ttft <= self.ttft and tpot <= self.tpot

    def attainment_of(self, latencies: Iterable[tuple[float | None, float | None]]) -> float:
        """Share of ``(ttft, tpot)`` pairs that meet both targets (0 for none)."""
        total = met = 0
        for ttft, tpot in latencies:
            total += 1
            met += self.met(ttft, tpot)
        return met / total if total else 0.0

    def describe(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return (f"{label}TTFT <= {self.ttft:g} s, TPOT <= {self.tpot:g} s, "
                f"{self.attainment:.0%} of requests")
