"""Processed workloads (token lengths and how to rebuild each prompt), cached on disk.

Tokenizing ShareGPT's ~17.7k conversations takes 30-90 s on two cores, so the result is
kept as a small JSON file, keyed by the dataset, the processing rule's version, the data
package's version and file size, and the tokenizer's fingerprint. :func:`lookup` tries,
in order:

1. the user cache, ``$DSBOX_CACHE/workloads`` (default ``~/.cache/dsbox/workloads``);
2. lengths shipped with dsbox in ``dsbox/data/workloads/<name>-lengths.json``, made with
   the bundled tokenizer (``python -m dsbox.workloads --write-bundled`` regenerates them),
   so that the default workloads load at once on a fresh machine.

A file whose key differs is ignored, and so is a cache that cannot be read or written:
the workload is then rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "bundled_lengths_path",
    "cache_dir",
    "cache_key",
    "lookup",
    "read_bundled",
    "read_cache",
    "write_cache",
    "write_record",
]

_CACHE_ENV = "DSBOX_CACHE"


def cache_dir() -> Path:
    """``$DSBOX_CACHE/workloads``, or ``~/.cache/dsbox/workloads``."""
    root = os.environ.get(_CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "dsbox"
    return base / "workloads"


def cache_key(**parts: Any) -> str:
    """A short hex digest of the keyword parts (JSON-serializable values)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _path(name: str, key: str) -> Path:
    return cache_dir() / f"{name}-{key}.json"


def _payload(text: str, key: str) -> Any | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    return record.get("payload")


def read_cache(name: str, key: str) -> Any | None:
    """The user-cache payload for ``(name, key)``, or None when absent or unreadable."""
    try:
        text = _path(name, key).read_text(encoding="utf-8")
    except OSError:
        return None
    return _payload(text, key)


def bundled_lengths_path(name: str) -> Path:
    """Where the shipped lengths of workload ``name`` live in a source checkout."""
    return Path(__file__).resolve().parent.parent / "data" / "workloads" / f"{name}-lengths.json"


def read_bundled(name: str, key: str) -> Any | None:
    """The payload shipped in ``dsbox/data/workloads`` when its key is ``key``, else None."""
    resource = resources.files("dsbox").joinpath("data", "workloads", f"{name}-lengths.json")
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError:
        return None
    return _payload(text, key)


def lookup(name: str, key: str) -> Any | None:
    """The payload from the user cache, else from the shipped lengths, else None."""
    payload = read_cache(name, key)
    return payload if payload is not None else read_bundled(name, key)


def write_record(path: Path, key: str, payload: Any) -> None:
    """Write ``{"key": ..., "payload": ...}`` to ``path`` atomically (raises OSError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"key": key, "payload": payload}, f, separators=(",", ":"))
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are plain data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_cache(name: str, key: str, payload: Any) -> Path | None:
    """Store ``payload`` in the user cache; return the file, or None if it could not be."""
    path = _path(name, key)
    try:
        write_record(path, key, payload)
    except OSError:
        return None
    return path
