"""Tokenizers for OPT-family checkpoints: loading, encoding, streaming detokenization.

OPT uses GPT-2's byte-level BPE and prepends BOS ``</s>`` (id 2) to every prompt, as
Hugging Face's OPT tokenizer does. This module wraps the ``tokenizers`` library:

- :func:`load_tokenizer` reads a checkpoint directory (``tokenizer.json``, or GPT-2 style
  ``vocab.json`` + ``merges.txt``);
- :func:`bundled_tokenizer` loads the OPT-like tokenizer vendored in
  ``dsbox/data/gpt2-bpe/`` (GPT-2's ``r50k_base`` ranks with OPT's four special tokens in
  front: token counts and segmentation equal OPT's, ids do not; see the README there);
- :func:`save_tokenizer_files` writes that tokenizer into a checkpoint directory so that
  both this module and ``transformers.AutoTokenizer`` can load it;
- :class:`IncrementalDetokenizer` turns a growing list of token ids into text deltas for
  streaming without splitting multi-byte UTF-8 characters;
The converter that produced the vendored files from tiktoken-format ranks is a script,
``scripts/convert_bpe_ranks.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

__all__ = [
    "OPT_SPECIAL_TOKENS",
    "DetokenizerState",
    "IncrementalDetokenizer",
    "Tokenizer",
    "bundled_tokenizer",
    "decode_incremental",
    "load_tokenizer",
    "save_tokenizer_files",
]

#: OPT's special tokens in id order: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3.
OPT_SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>")

_BUNDLED_DIR = ("data", "gpt2-bpe")
_VOCAB_FILE = "vocab.json"
_MERGES_FILE = "merges.txt"
_TOKENIZER_JSON = "tokenizer.json"
_CONFIG_FILES = ("special_tokens_map.json", "tokenizer_config.json")
_REPLACEMENT_CHAR = "\ufffd"
# How many tokens before the read offset are decoded again as context (vLLM uses 5).
_PREFIX_WINDOW = 5


@dataclass(frozen=True, slots=True)
class DetokenizerState:
    """Offsets into a token list for incremental detokenization.

    ``ids[prefix_offset:read_offset]`` is context whose text has already been emitted;
    ``ids[read_offset:]`` has not been emitted yet.
    """

    prefix_offset: int = 0
    read_offset: int = 0

    @classmethod
    def after_prompt(cls, num_prompt_tokens: int) -> DetokenizerState:
        """State for a sequence whose first ``num_prompt_tokens`` ids are a prompt (not shown)."""
        return cls(max(num_prompt_tokens - _PREFIX_WINDOW, 0), num_prompt_tokens)


@dataclass(frozen=True)
class Tokenizer:
    """A byte-level BPE tokenizer with OPT's BOS/EOS conventions.

    ``hf`` is the underlying ``tokenizers.Tokenizer``; ``source`` says where it was loaded
    from (for messages).
    """

    hf: tokenizers.Tokenizer = field(repr=False)
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int | None = None
    source: str = ""

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special and added tokens included."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_bos`` the BOS id comes first (OPT prompts)."""
        ids = self.hf.encode(text, add_special_tokens=False).ids
        return [self.bos_token_id, *ids] if add_bos else ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
        """:meth:`encode` over many texts, in parallel inside ``tokenizers``."""
        encodings = self.hf.encode_batch_fast(list(texts), add_special_tokens=False)
        if add_bos:
            return [[self.bos_token_id, *e.ids] for e in encodings]
        return [e.ids for e in encodings]

    def count_tokens(self, texts: Sequence[str], add_bos: bool = True) -> list[int]:
        """Token count of each text (BOS included when ``add_bos``)."""
        extra = 1 if add_bos else 0
        encodings = self.hf.encode_batch_fast(list(texts), add_special_tokens=False)
        return [len(e.ids) + extra for e in encodings]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; bytes that do not form valid UTF-8 come out as U+FFFD."""
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def fingerprint(self) -> str:
        """A hash of what decides the token ids of a text (for cache keys); computed once."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        """A hash of what decides the token ids of a text (for cache keys).

        Covers the normalizer, pre-tokenizer, model (vocabulary, merges, options) and added
        tokens, plus the BOS/EOS/PAD ids, in a form that does not depend on how a given
        ``tokenizers`` release serializes them: options left at None/False are dropped and
        merges are written as ``"a b"``.
        """
        data = json.loads(self.hf.to_str())
        model = dict(data.get("model") or {})
        model["merges"] = [
            m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])
        ]
        identity = {
            "normalizer": data.get("normalizer"),
            "pre_tokenizer": data.get("pre_tokenizer"),
            "model": model,
            "added_tokens": data.get("added_tokens"),
            "ids": [self.bos_token_id, self.eos_token_id, self.pad_token_id],
        }
        blob = json.dumps(_drop_unset(identity), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary token (in its byte-level spelling), or None."""
        return self.hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Vocabulary token (byte-level spelling) of an id, or None."""
        return self.hf.id_to_token(token_id)

    def decode_incremental(
        self,
        ids: Sequence[int],
        state: DetokenizerState,
        skip_special_tokens: bool = True,
    ) -> tuple[str, DetokenizerState]:
        """Text completed by the ids past ``state.read_offset``; see :func:`decode_incremental`."""
        return decode_incremental(self, ids, state, skip_special_tokens)


def _drop_unset(value: object) -> object:
    """``value`` with dict entries that are None or False removed, recursively."""
    if isinstance(value, dict):
        return {k: _drop_unset(v) for k, v in value.items() if v is not None and v is not False}
    if isinstance(value, list):
        return [_drop_unset(v) for v in value]
    return value


def decode_incremental(
    tokenizer: Tokenizer,
    ids: Sequence[int],
    state: DetokenizerState,
    skip_special_tokens: bool = True,
) -> tuple[str, DetokenizerState]:
    """Return ``(new_text, new_state)`` for the ids appended since ``state.read_offset``.

    The window ``ids[prefix_offset:]`` is decoded and compared with the decode of
    ``ids[prefix_offset:read_offset]``; the difference is the new text. When the window
    ends inside a multi-byte UTF-8 character (the decode ends in U+FFFD) nothing is
    emitted and the state is kept, so the character comes out whole once its last byte
    arrives. Concatenating every ``new_text`` (plus :meth:`IncrementalDetokenizer.flush`)
    gives ``tokenizer.decode(ids[start:])``.
    """
    prefix_offset, read_offset = state.prefix_offset, state.read_offset
    if read_offset >= len(ids):
        return "", state
    prefix_text = tokenizer.decode(ids[prefix_offset:read_offset], skip_special_tokens)
    full_text = tokenizer.decode(ids[prefix_offset:], skip_special_tokens)
    if full_text.endswith(_REPLACEMENT_CHAR) or not full_text.startswith(prefix_text):
        return "", state
    new_text = full_text[len(prefix_text) :]
    if not new_text:
        # Only skipped special tokens arrived: move on without emitting anything.
        return "", DetokenizerState(prefix_offset, len(ids))
    return new_text, DetokenizerState(read_offset, len(ids))


class IncrementalDetokenizer:
    """Streaming detokenizer for one sequence: feed ids, get text deltas.

    >>> detok = IncrementalDetokenizer(tok, prompt_ids)   # doctest: +SKIP
    >>> detok.add([token_id])                             # doctest: +SKIP
    'Hello'
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = list(prompt_ids)
        self.state = DetokenizerState.after_prompt(len(self.ids))

    def add(self, token_ids: Iterable[int]) -> str:
        """Append ids; return the text they complete (may be empty)."""
        self.ids.extend(token_ids)
        text, self.state = decode_incremental(
            self.tokenizer, self.ids, self.state, self.skip_special_tokens
        )
        return text

    def flush(self) -> str:
        """Text still held back at the end of a sequence (an incomplete character as U+FFFD)."""
        state = self.state
        if state.read_offset >= len(self.ids):
            return ""
        prefix_text = self.tokenizer.decode(
            self.ids[state.prefix_offset : state.read_offset], self.skip_special_tokens
        )
        full_text = self.tokenizer.decode(self.ids[state.prefix_offset :], self.skip_special_tokens)
        self.state = DetokenizerState(state.read_offset, len(self.ids))
        return full_text[len(prefix_text) :]


# --------------------------------------------------------------------------- loading


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> tokenizers.Tokenizer:
    """A GPT-2 style byte-level BPE ``tokenizers.Tokenizer`` (no prefix space)."""
    hf = tokenizers.Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    return hf


def _read_merges(text: str) -> list[tuple[str, str]]:
    merges = []
    for line in text.splitlines():
        if not line or line.startswith("#version"):
            continue
        left, sep, right = line.partition(" ")
        if not sep or not right or " " in right:
            raise ValueError(f"malformed merges.txt line: {line!r}")
        merges.append((left, right))
    return merges


def _token_content(value: object) -> str | None:
    """A special token from a HF config: a plain string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_special_tokens(directory: Path) -> dict[str, str]:
    """``bos_token``/``eos_token``/``pad_token``/``unk_token`` named by the HF config files."""
    found: dict[str, str] = {}
    for name in _CONFIG_FILES:
        path = directory / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            content = _token_content(config.get(key))
            if content is not None:
                found.setdefault(key, content)
    return found


def _wrap(hf: tokenizers.Tokenizer, special: Mapping[str, str], source: str) -> Tokenizer:
    """Mark the special tokens as special and resolve the BOS/EOS/PAD ids."""
    names = dict(special)
    vocab = hf.get_vocab(with_added_tokens=True)
    default = next((t for t in ("</s>", "<|endoftext|>") if t in vocab), None)
    for key in ("bos_token", "eos_token"):
        if key not in names and default is not None:
            names[key] = default
    if "pad_token" not in names and "<pad>" in vocab:
        names["pad_token"] = "<pad>"
    to_mark = [t for t in OPT_SPECIAL_TOKENS if t in vocab]
    to_mark += [t for t in names.values() if t in vocab and t not in to_mark]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in to_mark])

    ids: dict[str, int | None] = {}
    for key in ("bos_token", "eos_token", "pad_token"):
        token = names.get(key)
        ids[key] = hf.token_to_id(token) if token is not None else None
    if ids["bos_token"] is None or ids["eos_token"] is None:
        raise ValueError(
            f"tokenizer at {source}: cannot find BOS/EOS tokens "
            f"(looked for {names.get('bos_token')!r}/{names.get('eos_token')!r}, "
            "'</s>' and '<|endoftext|>')"
        )
    return Tokenizer(hf, ids["bos_token"], ids["eos_token"], ids["pad_token"], source)


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Load the tokenizer of a Hugging Face checkpoint directory.

    Uses ``tokenizer.json`` when present, else GPT-2 style ``vocab.json`` + ``merges.txt``
    (byte-level BPE, as OPT ships). BOS/EOS/PAD come from ``special_tokens_map.json`` or
    ``tokenizer_config.json`` when present, else ``</s>`` (OPT) or ``<|endoftext|>``.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
    special = _read_special_tokens(directory)
    tokenizer_json = directory / _TOKENIZER_JSON
    if tokenizer_json.is_file():
        hf = tokenizers.Tokenizer.from_file(str(tokenizer_json))
        return _wrap(hf, special, str(directory))
    vocab_path, merges_path = directory / _VOCAB_FILE, directory / _MERGES_FILE
    if vocab_path.is_file() and merges_path.is_file():
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = _read_merges(merges_path.read_text(encoding="utf-8"))
        return _wrap(_byte_level_bpe(vocab, merges), special, str(directory))
    raise FileNotFoundError(
        f"no tokenizer in {directory}: looked for {_TOKENIZER_JSON}, "
        f"or {_VOCAB_FILE} together with {_MERGES_FILE}"
    )


def _bundled_files() -> tuple[str, str]:
    root = resources.files("dsbox").joinpath(*_BUNDLED_DIR)
    vocab = root.joinpath(_VOCAB_FILE).read_text(encoding="utf-8")
    merges = root.joinpath(_MERGES_FILE).read_text(encoding="utf-8")
    return vocab, merges


def bundled_tokenizer() -> Tokenizer:
    """The vendored OPT-like tokenizer (GPT-2 BPE; ids = GPT-2 rank + 4, specials 0-3).

    Token counts and segmentation equal facebook/opt's; ids differ from its fairseq order.
    Loading takes a fraction of a second; callers that need it often should keep it.
    """
    vocab_text, merges_text = _bundled_files()
    hf = _byte_level_bpe(json.loads(vocab_text), _read_merges(merges_text))
    return _wrap(hf, {}, "bundled gpt2-bpe (dsbox/data/gpt2-bpe)")


def _opt_tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": 2048,
        "add_bos_token": True,
        "add_prefix_space": False,
        "errors": "replace",
        "bos_token": "</s>",
        "eos_token": "</s>",
        "unk_token": "</s>",
        "pad_token": "<pad>",
    }


def save_tokenizer_files(dest_dir: Path | str) -> Path:
    """Write the bundled tokenizer into a checkpoint directory and return the directory.

    Files: ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and
    ``special_tokens_map.json`` (OPT's: BOS = EOS = ``</s>``, pad ``<pad>``, BOS added to
    prompts), loadable by :func:`load_tokenizer` and by ``transformers.AutoTokenizer``.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    vocab_text, merges_text = _bundled_files()
    (dest / _VOCAB_FILE).write_text(vocab_text, encoding="utf-8")
    (dest / _MERGES_FILE).write_text(merges_text, encoding="utf-8")
    config = _opt_tokenizer_config()
    special_map = {k: v for k, v in config.items() if k.endswith("_token")}
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (dest / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return dest
