"""Binding and serving: a listening socket first (a busy port fails before the engine
loads), then uvicorn on it until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import socket

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
BACKLOG = 2048


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: a server stopped while its engine
    loads still shuts its worker processes down on the way out."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one); ValueError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)  # from now on connections queue, even before uvicorn runs
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM, then return (streams still open
    after 5 s are cancelled, which aborts their requests), so the caller can close the
    engine and its workers. uvicorn re-raises the signal it shut down for once it is done;
    the handlers installed here take it instead of the default (which would end the
    process before the engine is closed)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, backlog=BACKLOG)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in STOP_SIGNALS}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
