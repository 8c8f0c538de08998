"""``python -m dsbox.workloads``: print each workload's size and mean lengths.

``--write-bundled`` rebuilds the ShareGPT and long-document lengths with the bundled
tokenizer (ignoring every cache) and writes them to ``dsbox/data/workloads/`` in this
source tree, where :func:`dsbox.workloads.cache.lookup` finds them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from dsbox.engine.model.tokenizer import bundled_tokenizer
from dsbox.workloads.cache import bundled_lengths_path, cache_dir, lookup, write_record
from dsbox.workloads.registry import WORKLOAD_NAMES, load_workload
from dsbox.workloads.spec import summarize

_CACHED = ("sharegpt", "longdoc")


def _write_bundled() -> None:
    tokenizer = bundled_tokenizer()
    previous = os.environ.get("DSBOX_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DSBOX_CACHE"] = tmp
        try:
            for name in _CACHED:
                bundled_lengths_path(name).unlink(missing_ok=True)
                load_workload(name, tokenizer, with_text=False)
                (path,) = cache_dir().glob(f"{name}-*.json")
                key = path.stem.removeprefix(f"{name}-")
                write_record(bundled_lengths_path(name), key, lookup(name, key))
                print(f"wrote {bundled_lengths_path(name)}")
        finally:
            if previous is None:
                os.environ.pop("DSBOX_CACHE", None)
            else:
                os.environ["DSBOX_CACHE"] = previous


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dsbox.workloads", description=__doc__)
    parser.add_argument(
        "--write-bundled", action="store_true", help="rebuild and write the shipped lengths"
    )
    args = parser.parse_args(argv)
    if args.write_bundled:
        _write_bundled()
    tokenizer = bundled_tokenizer()
    for name, what in WORKLOAD_NAMES.items():
        start = time.perf_counter()
        stats = summarize(load_workload(name, tokenizer, with_text=False))
        print(
            f"{name:10s} {stats.num_requests:6d} requests, mean prompt "
            f"{stats.mean_prompt_tokens:7.1f}, mean output {stats.mean_output_tokens:6.1f} "
            f"tokens, max total {stats.max_total_tokens} ({time.perf_counter() - start:.1f} s) "
            f"- {what}"
        )


if __name__ == "__main__":
    main()
