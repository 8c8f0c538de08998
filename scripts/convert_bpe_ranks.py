"""Convert tiktoken-format BPE ranks into GPT-2 style ``vocab.json`` + ``merges.txt``.

This produced the bundled tokenizer in ``dsbox/data/gpt2-bpe/`` from GPT-2's ``r50k_base``
ranks (see the README there)::

    python scripts/convert_bpe_ranks.py r50k_base.tiktoken dsbox/data/gpt2-bpe

Each merge is recovered from the ranks alone: BPE over a token's bytes using only lower
ranks must end in exactly two parts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from dsbox.engine.model.tokenizer import OPT_SPECIAL_TOKENS

_VOCAB_FILE = "vocab.json"
_MERGES_FILE = "merges.txt"



def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable unicode character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def load_tiktoken_ranks(path: Path | str) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file (one ``base64(token) rank`` per line)."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _recover_merge(token: bytes, rank: int, ranks: Mapping[bytes, int]) -> tuple[bytes, bytes]:
    """Run BPE over ``token``'s bytes with only ranks below ``rank``; it must end in 2 parts."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while True:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best_rank is None or r < best_rank):
                best_rank, best_i = r, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) does not come from a single merge")
    return parts[0], parts[1]


def bpe_files_from_ranks(
    ranks: Mapping[bytes, int],
    special_tokens: Sequence[str] = OPT_SPECIAL_TOKENS,
    trailing_tokens: Sequence[str] = ("<|endoftext|>",),
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Convert tiktoken ranks into a GPT-2 style ``(vocab, merges)`` pair.

    ``special_tokens`` take ids ``0..k-1``; the token of rank ``r`` takes id ``r + k``;
    ``trailing_tokens`` follow the last rank (GPT-2's ``<|endoftext|>`` at rank 50256).
    Merges come out in rank order, which is the priority order of GPT-2's BPE.
    """
    byte_map = bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    offset = len(special_tokens)
    vocab: dict[str, int] = {t: i for i, t in enumerate(special_tokens)}
    merges: list[tuple[str, str]] = []
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    for token, rank in ordered:
        vocab[spell(token)] = rank + offset
        if len(token) > 1:
            left, right = _recover_merge(token, rank, ranks)
            merges.append((spell(left), spell(right)))
    next_id = (ordered[-1][1] + 1 + offset) if ordered else offset
    for i, token in enumerate(trailing_tokens):
        vocab[token] = next_id + i
    if len(set(vocab.values())) != len(vocab):
        raise ValueError("token ids collide: ranks are not distinct")
    return vocab, merges


def write_bpe_files(
    vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], dest_dir: Path | str
) -> None:
    """Write ``vocab.json`` and ``merges.txt`` (GPT-2 format) into ``dest_dir``."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    (dest / _VOCAB_FILE).write_text(
        json.dumps(ordered, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (dest / _MERGES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _main(argv: Sequence[str] | None = None) -> None:
    """``python scripts/convert_bpe_ranks.py RANKS.tiktoken DEST_DIR``: regenerate BPE files."""
    import argparse

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("ranks", type=Path, help="a .tiktoken rank file (e.g. r50k_base)")
    parser.add_argument("dest", type=Path, help="directory for vocab.json and merges.txt")
    args = parser.parse_args(argv)
    vocab, merges = bpe_files_from_ranks(load_tiktoken_ranks(args.ranks))
    write_bpe_files(vocab, merges, args.dest)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.dest}")


if __name__ == "__main__":
    _main()
