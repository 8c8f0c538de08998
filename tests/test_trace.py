"""Recorded traces: CSV and JSONL round trips, and errors that name the line."""

from __future__ import annotations

import pytest

from dsbox.engine.model.tokenizer import bundled_tokenizer
from dsbox.workloads.trace import Trace


def test_csv_round_trip(tmp_path):
    trace = Trace((0.0, 0.25, 1.5), (10, 20, 30), (5, 6, 7))
    path = tmp_path / "t.csv"
    trace.write_csv(path)
    assert path.read_text().splitlines()[0] == "arrival_time_s,input_len,output_len"
    assert Trace.read(path) == trace


def test_jsonl_lengths_or_prompt_text(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival_time_s": 0.5, "input_len": 4, "output_len": 3}\n\n'
                    '{"arrival_time_s": 0.1, "prompt": "Hello there", "output_len": 2}\n')
    tok = bundled_tokenizer()
    trace = Trace.read(path, tokenizer=tok)
    assert trace.arrivals == (0.1, 0.5)  # sorted by arrival
    assert trace.prompt_lens == (len(tok.encode("Hello there")), 4)
    assert trace.prompts == ("Hello there", None)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        Trace.read(path)


@pytest.mark.parametrize("name, text, match", [
    ("a.csv", "time,in,out\n0,1,1\n", r"a\.csv:1: expected the header"),
    ("b.csv", "arrival_time_s,input_len,output_len\n0,1\n", r"b\.csv:2: expected 3 fields"),
    ("c.csv", "arrival_time_s,input_len,output_len\n0,1.5,2\n", r"c\.csv:2: input_len must"),
    ("d.csv", "arrival_time_s,input_len,output_len\nnan,1,2\n", r"d\.csv:2: arrival_time_s"),
    ("e.csv", "arrival_time_s,input_len,output_len\n0,0,2\n", r"lengths must be >= 1"),
    ("f.jsonl", '{"arrival_time_s": 0, "output_len": 1}\n', r"f\.jsonl:1: needs"),
    ("g.jsonl", "{not json}\n", r"g\.jsonl:1: not valid JSON"),
    ("h.csv", "arrival_time_s,input_len,output_len\n", r"no requests"),
])
def test_malformed_traces_name_the_line(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        Trace.read(path)


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the trace"):
        Trace.read(tmp_path / "nope.csv")
