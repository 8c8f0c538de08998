"""ShutdownGuard: ``dsbox run`` stops every worker whatever ends it: a quit, a crash, or
SIGINT, SIGTERM or SIGHUP (the terminal closed).

While the engine starts, a signal unwinds the start-up (the engine kills the workers it has
started). Once the app runs, the handler closes the engine client in a thread of its own (a
signal handler must not wait on locks the interrupted code may hold) and asks the app to
leave; the command's ``finally`` joins that close, so the process exits only after every
worker has stopped. The previous handlers come back on exit. No textual import.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal arrived while the engine started (or before the app took over)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class ShutdownGuard:
    """``with ShutdownGuard() as guard:`` set ``guard.client`` once the engine is up and
    ``guard.on_signal`` while an app runs; leaving the block closes the client."""

    def __init__(self) -> None:
        self.client = None
        self.on_signal: Callable[[int], None] | None = None
        self.signum: int | None = None
        self._closer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ShutdownGuard:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close_client()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        if self.on_signal is None:
            raise Interrupted(signum)
        self._start_close()
        self.on_signal(signum)

    def _start_close(self) -> None:
        with self._lock:
            if self._closer is None and self.client is not None:
                self._closer = threading.Thread(target=self.client.close,
                                                name="dsbox-shutdown", daemon=True)
                self._closer.start()

    def close_client(self) -> None:
        """Close the client (once, whoever asks first) and wait until it is closed."""
        self._start_close()
        if self._closer is not None:
            self._closer.join()
