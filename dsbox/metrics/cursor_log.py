"""CursorLog: a bounded log written by one thread and read from any, with a cursor.

The engine keeps its finished requests and its steps in these; a reader passes the cursor
it got last time and receives only what came after it (what fell off the end is gone).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class CursorLog(Generic[T]):
    """The last ``size`` items appended."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._items: deque[tuple[int, T]] = deque(maxlen=size)
        self._seq = itertools.count(1)

    def append(self, item: T) -> None:
        with self._lock:
            self._items.append((next(self._seq), item))

    def since(self, cursor: int = 0) -> tuple[list[T], int]:
        """Items after ``cursor``, and the cursor to pass next time."""
        with self._lock:
            items = [x for n, x in self._items if n > cursor]
            last = self._items[-1][0] if self._items else cursor
        return items, max(last, cursor)

    def __len__(self) -> int:
        return len(self._items)
