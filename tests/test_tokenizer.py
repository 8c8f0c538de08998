"""Tests of dsbox.engine.model.tokenizer: the bundled GPT-2/OPT BPE, loading, streaming decode."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsbox.engine.model.tokenizer import (
    DetokenizerState,
    IncrementalDetokenizer,
    Tokenizer,
    bundled_tokenizer,
    decode_incremental,
    load_tokenizer,
    save_tokenizer_files,
)
from scripts.convert_bpe_ranks import bpe_files_from_ranks, bytes_to_unicode

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 3.14159 o'clock; we're sure they'll "
    "say I'd've done it. SHE'S HERE, YOU'RE THERE, I'M LATE, WE'VE GONE.",
    "Ünïcödé: naïve café résumé — “quotes” ‘single’ … ½ ¼ ß Æ Ø å ñ ç; Ελληνικά κείμενο; "
    "Русский текст; עברית; العربية; हिन्दी; 日本語のテキストです。中文文本。한국어 텍스트.",
    "Emoji: 😀😃😄 👩‍👩‍👧‍👦 🇫🇷 🏳️‍🌈 ✅ ❤️ 🤖 and combining: e\u0301 a\u0308 n\u0303 z\u0327.",
    "   leading spaces\n\n\n\ttabs\t\tand   runs     of      spaces   \n  \r\n trailing   ",
    "\n\n\n\n",
    "    \t  ",
    textwrap.dedent(
        '''\
        def fibonacci(n: int) -> list[int]:
            """Return the first n Fibonacci numbers."""
            seq = [0, 1]
            while len(seq) < n:
                seq.append(seq[-1] + seq[-2])  # grow
            return seq[:n]


        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def __repr__(self):
                return f"Point({self.x!r}, {self.y!r})"
        '''
    ),
    "if (a && b || !c) { x += 0x1F; y <<= 2; } else { z = a ? b : c; } // done\n#include <stdio.h>",
    '<html><body><p class="x">Hi &amp; bye</p></body></html>',
    "1234567890 12,345.67 1e-9 -42 +7 100% $9.99 €5 ¥100 #hashtag @user http://example.com/a?b=c",
    "!!!??? ... --- *** ___ === +++ ~~~ ``` ||| \\\\ /// ((( ))) [[[ ]]] {{{ }}}",
    "MiXeD CaSe WoRdS and ALLCAPS and lowercase and camelCaseIdentifiers and snake_case_names",
    "Zero-width\u200bspace, non\u00a0breaking space, ideographic\u3000space, and a\u2028line sep.",
]


def _stdlib_sources() -> list[str]:
    """Some real Python source and prose from the standard library (a few kB)."""
    sources = []
    for module in (json, textwrap):
        text = Path(module.__file__).read_text(encoding="utf-8")
        sources.append(text[:3000])
    return sources


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return bundled_tokenizer()


@pytest.fixture(scope="module")
def tiktoken_encoding(tok: Tokenizer):
    """tiktoken's Encoding built (no download) from the ranks the bundled vocab encodes."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken_ext.openai_public import r50k_pat_str

    unicode_to_byte = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab = tok.hf.get_vocab(with_added_tokens=False)
    ranks = {
        bytes(unicode_to_byte[ch] for ch in token): i - 4
        for token, i in vocab.items()
        if 4 <= i < 50260
    }
    assert len(ranks) == 50256
    return tiktoken.Encoding(
        name="r50k_base_local",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


def test_vocab_layout(tok: Tokenizer) -> None:
    assert tok.vocab_size == 50261
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 2, 1)
    for i, name in enumerate(["<s>", "<pad>", "</s>", "<unk>"]):
        assert tok.token_to_id(name) == i
    assert tok.token_to_id("<|endoftext|>") == 50260
    # GPT-2: "Hello" = 15496, " world" = 995; OPT prepends BOS.
    assert tok.encode("Hello world") == [2, 15496 + 4, 995 + 4]
    assert tok.encode("Hello world", add_bos=False) == [15496 + 4, 995 + 4]
    assert tok.encode("") == [2]


def test_segmentation_equals_tiktoken(tok: Tokenizer, tiktoken_encoding) -> None:
    texts = [*SAMPLES, *_stdlib_sources(), "".join(SAMPLES)]
    assert sum(len(t) for t in texts) > 4000
    ours = tok.encode_batch(texts, add_bos=False)
    for text, ids in zip(texts, ours, strict=True):
        expected = tiktoken_encoding.encode_ordinary(text)
        assert [i - 4 for i in ids] == expected, text[:80]
        assert tok.encode(text) == [2, *ids]
    assert tok.count_tokens(texts) == [len(ids) + 1 for ids in ours]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=120))
def test_segmentation_equals_tiktoken_random(tok: Tokenizer, tiktoken_encoding, text) -> None:
    if any(special in text for special in ("<s>", "<pad>", "</s>", "<unk>")):
        return  # those are special tokens here, plain text to encode_ordinary
    assert [i - 4 for i in tok.encode(text, add_bos=False)] == tiktoken_encoding.encode_ordinary(
        text
    )


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=False) == "</s>" + text


def test_special_tokens_are_skipped_in_decode(tok: Tokenizer) -> None:
    ids = tok.encode("a</s>b")
    assert ids.count(2) == 2  # BOS and the special token in the text, as HF's OPT does
    assert tok.decode(ids) == "ab"


MULTIBYTE = "Grüße 😀👩‍👩‍👧‍👦 日本語のテキスト — naïve 🇫🇷 한국어 e\u0301 end"


def _stream(tok: Tokenizer, ids: list[int], prompt: list[int] = ()) -> list[str]:
    detok = IncrementalDetokenizer(tok, prompt)
    deltas = [detok.add([i]) for i in ids]
    deltas.append(detok.flush())
    return deltas


def test_incremental_detokenizer_equals_full_decode(tok: Tokenizer) -> None:
    ids = tok.encode(MULTIBYTE, add_bos=False)
    # The emoji and CJK characters span several byte-level tokens each.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    deltas = _stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids) == MULTIBYTE
    assert not any("\ufffd" in d for d in deltas)


def test_incremental_detokenizer_after_prompt(tok: Tokenizer) -> None:
    prompt = tok.encode("Question: say it in Japanese.\nAnswer:")
    output = tok.encode(" 日本語です 😀", add_bos=False) + [tok.eos_token_id]
    deltas = _stream(tok, output, prompt)
    assert "".join(deltas) == " 日本語です 😀"
    assert deltas[-2:] == ["", ""]  # EOS is skipped, nothing left to flush


def test_decode_incremental_function(tok: Tokenizer) -> None:
    ids = tok.encode("😀", add_bos=False)
    assert len(ids) > 1
    text, state = decode_incremental(tok, ids[:1], DetokenizerState())
    assert (text, state) == ("", DetokenizerState())  # incomplete character held back
    text, state = tok.decode_incremental(ids, state)
    assert text == "😀"
    assert state == DetokenizerState(0, len(ids))
    assert tok.decode_incremental(ids, state) == ("", state)


def test_flush_emits_incomplete_tail(tok: Tokenizer) -> None:
    ids = tok.encode("ok 😀", add_bos=False)
    detok = IncrementalDetokenizer(tok)
    text = "".join(detok.add([i]) for i in ids[:-1])
    assert text == "ok"  # the space shares a token with the emoji's first bytes
    assert detok.flush() == " \ufffd"
    assert detok.flush() == ""


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60), chunk=st.integers(min_value=1, max_value=4))
def test_incremental_detokenizer_random(tok: Tokenizer, text: str, chunk: int) -> None:
    ids = tok.encode(text, add_bos=False)
    detok = IncrementalDetokenizer(tok)
    out = "".join(detok.add(ids[i : i + chunk]) for i in range(0, len(ids), chunk))
    out += detok.flush()
    assert out == tok.decode(ids)


def test_load_from_vocab_and_merges(tmp_path: Path, tok: Tokenizer) -> None:
    save_tokenizer_files(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= names
    loaded = load_tokenizer(tmp_path)
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (2, 2, 1)
    assert loaded.vocab_size == tok.vocab_size
    for text in SAMPLES:
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.fingerprint() == tok.fingerprint()


def test_load_from_tokenizer_json(tmp_path: Path, tok: Tokenizer) -> None:
    tok.hf.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(str(tmp_path))
    assert (loaded.bos_token_id, loaded.eos_token_id) == (2, 2)
    for text in SAMPLES:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text


def test_load_gpt2_style_dir_defaults_to_endoftext(tmp_path: Path) -> None:
    vocab, merges = bpe_files_from_ranks({b"a": 0, b"b": 1, b" ": 2, b"ab": 3}, special_tokens=())
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    loaded = load_tokenizer(tmp_path)
    assert loaded.bos_token_id == loaded.eos_token_id == vocab["<|endoftext|>"] == 4
    assert loaded.encode("abab", add_bos=False) == [3, 3]


def test_missing_tokenizer_files(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text("{}")  # vocab without merges is not enough
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        assert name in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


def test_transformers_loads_saved_files(tmp_path: Path, tok: Tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    save_tokenizer_files(tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (2, 2, 1)
    for text in SAMPLES:
        assert hf_tok(text).input_ids == tok.encode(text)


def test_merge_recovery_from_ranks() -> None:
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4, b"bc": 5}
    vocab, merges = bpe_files_from_ranks(ranks)
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert vocab["a"] == 4 and vocab["abc"] == 8 and vocab["<|endoftext|>"] == 10
    # "abc" (rank 4) is built from ranks below 4 only: a+b -> ab, then ab+c.
    assert merges == [("a", "b"), ("ab", "c"), ("b", "c")]
    with pytest.raises(ValueError, match="single merge"):
        bpe_files_from_ranks({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


def test_bundled_merges_file_header() -> None:
    from importlib import resources

    merges = resources.files("dsbox").joinpath("data", "gpt2-bpe", "merges.txt").read_text("utf-8")
    lines = merges.splitlines()
    assert lines[0] == "#version: 0.2"
    assert lines[1:4] == ["Ġ t", "Ġ a", "h e"]  # GPT-2's first merges
    assert len(lines) == 50001
