"""Text-level stopping: stop strings matched in the detokenized output as it streams."""

from __future__ import annotations


def find_stop(text: str, new_len: int, stops: list[str]) -> tuple[int, str] | None:
    """Earliest stop string that ends inside the last ``new_len`` characters of ``text``:
    (its start index, the string); None if there is none."""
    if not stops:
        return None
    best: tuple[int, str] | None = None
    for stop in stops:
        lo = max(0, len(text) - new_len - len(stop) + 1)
        i = text.find(stop, lo)
        if i != -1 and (best is None or i < best[0]):
            best = (i, stop)
    return best
