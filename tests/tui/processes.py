"""What a process tree holds, for the "nothing left behind" checks: its descendants (from
/proc) and the /dev/shm files they map or hold open."""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC = Path("/proc")


def _parents() -> dict[int, int]:
    out = {}
    for d in PROC.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
        out[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> set[int]:
    parents = _parents()
    found, frontier = set(), {pid}
    while frontier:
        kids = {p for p, pp in parents.items() if pp in frontier} - found
        found |= kids
        frontier = kids
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def shm_files(pids: set[int]) -> set[str]:
    """/dev/shm paths the processes map or hold open."""
    found = set()
    for pid in pids:
        try:
            maps = (PROC / str(pid) / "maps").read_text()
        except OSError:
            maps = ""
        for line in maps.splitlines():
            if "/dev/shm/" in line:
                found.add(line[line.index("/dev/shm/"):].split(" (deleted)")[0].strip())
        try:
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            fds = []
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("/dev/shm/"):
                found.add(target.split(" (deleted)")[0])
    return found


def wait_gone(pids: set[int], timeout: float = 20.0) -> set[int]:
    """Wait for ``pids`` to exit; those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def left_in_shm(paths: set[str]) -> set[str]:
    return {p for p in paths if os.path.exists(p)}


MARK = "DSBOX_TEST_MARK"


def marked(mark: str) -> set[int]:
    """Processes whose environment carries ``DSBOX_TEST_MARK=mark`` (every descendant of a
    command started with it inherits it, even once orphaned)."""
    needle = f"{MARK}={mark}".encode()
    found = set()
    for d in PROC.iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.add(int(d.name))
        except OSError:
            continue
    return alive(found)
