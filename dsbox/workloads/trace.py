"""Trace: requests with arrival times, the one input of the simulator and of a real run.

A trace holds, per request, its arrival time (seconds from the start of the run), its
prompt length and how many tokens to generate, and optionally the prompt text (a real run
sends the text; the simulator needs only the lengths). ``make_trace`` draws one from a
workload with Poisson arrivals; :meth:`Trace.read` replays a recorded one:

- CSV with the header ``arrival_time_s,input_len,output_len``;
- JSONL, one object per line with ``arrival_time_s``, ``output_len`` and either
  ``input_len`` or ``prompt`` (text; its length then comes from the tokenizer).

Errors name the file and the line.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

CSV_HEADER = ("arrival_time_s", "input_len", "output_len")


@dataclass(frozen=True, slots=True)
class Trace:
    """Arrival time (s), prompt and output token counts, and optional prompt texts."""

    arrivals: tuple[float, ...]
    prompt_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    prompts: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.arrivals)
        if len(self.prompt_lens) != n or len(self.output_lens) != n:
            raise ValueError("arrivals, prompt_lens and output_lens differ in length")
        if self.prompts is not None and len(self.prompts) != n:
            raise ValueError("prompts and arrivals differ in length")
        if any(x < 1 for x in self.prompt_lens) or any(x < 1 for x in self.output_lens):
            raise ValueError("prompt and output lengths must be >= 1")
        if any(not math.isfinite(a) or a < 0 for a in self.arrivals):
            raise ValueError("arrival times must be finite and >= 0")
        if any(b < a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)):
            raise ValueError("arrivals must be non-decreasing")

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def max_total_tokens(self) -> int:
        return max((p + o for p, o in zip(self.prompt_lens, self.output_lens, strict=True)),
                   default=0)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last arrival."""
        return self.arrivals[-1] - self.arrivals[0] if self.arrivals else 0.0

    def scaled(self, rate_factor: float) -> Trace:
        """The same requests arriving ``rate_factor`` times as fast."""
        if not rate_factor > 0:
            raise ValueError(f"rate factor must be > 0, got {rate_factor}")
        return Trace(tuple(a / rate_factor for a in self.arrivals), self.prompt_lens,
                     self.output_lens, self.prompts)

    def without_prompts(self) -> Trace:
        return Trace(self.arrivals, self.prompt_lens, self.output_lens)

    # --- files ---------------------------------------------------------------------------
    def write_csv(self, path: Path | str) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_HEADER)
            for row in zip(self.arrivals, self.prompt_lens, self.output_lens, strict=True):
                w.writerow((f"{row[0]:.6f}", row[1], row[2]))

    @classmethod
    def read(cls, path: Path | str, tokenizer=None) -> Trace:
        """A recorded trace (``.csv``, or ``.jsonl``/``.json`` lines). ``tokenizer`` counts
        the tokens of JSONL prompts given as text. Raises ValueError naming the line."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the trace ({exc.strerror})") from None
        rows = (_csv_rows(path, text) if path.suffix.lower() == ".csv"
                else _jsonl_rows(path, text, tokenizer))
        if not rows:
            raise ValueError(f"{path}: the trace has no requests")
        rows.sort(key=lambda r: r[0])
        try:
            return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                       tuple(r[2] for r in rows),
                       tuple(r[3] for r in rows) if any(r[3] for r in rows) else None)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def _number(path: Path, line: int, field: str, value, kind: type):
    try:
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        else:
            out = float(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{path}:{line}: {field} must be {what}, got {value!r}") from None
    if kind is float and not math.isfinite(out):
        raise ValueError(f"{path}:{line}: {field} must be finite, got {value!r}")
    return out


def _csv_rows(path: Path, text: str) -> list[tuple]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
        raise ValueError(f"{path}:1: expected the header {','.join(CSV_HEADER)}, "
                         f"got {','.join(header or [])!r}")
    rows = []
    for i, row in enumerate(reader, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 3:
            raise ValueError(f"{path}:{i}: expected 3 fields, got {len(row)}")
        rows.append((_number(path, i, "arrival_time_s", row[0].strip(), float),
                     _number(path, i, "input_len", row[1].strip(), int),
                     _number(path, i, "output_len", row[2].strip(), int), None))
    return rows


def _jsonl_rows(path: Path, text: str, tokenizer) -> list[tuple]:
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object")
        missing = [k for k in ("arrival_time_s", "output_len") if k not in obj]
        if missing or ("input_len" not in obj and "prompt" not in obj):
            raise ValueError(f"{path}:{i}: needs arrival_time_s, output_len and input_len "
                             "or prompt")
        prompt = obj.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"{path}:{i}: prompt must be a string")
        if "input_len" in obj:
            n = _number(path, i, "input_len", obj["input_len"], int)
        elif tokenizer is None:
            raise ValueError(f"{path}:{i}: a prompt given as text needs a tokenizer to count")
        else:
            n = len(tokenizer.encode(prompt))
        rows.append((_number(path, i, "arrival_time_s", obj["arrival_time_s"], float), n,
                     _number(path, i, "output_len", obj["output_len"], int), prompt))
    return rows
