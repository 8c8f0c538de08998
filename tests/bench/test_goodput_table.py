"""The per-GPU goodput table and verdict: a goodput no tried rate failed above is shown as
a lower bound ('>='), one the search bracketed as it is."""

from __future__ import annotations

import io

from rich.console import Console

from dsbox.bench.goodput import GoodputResult
from dsbox.bench.results import BenchResult
from dsbox.bench.summary import goodput_table, verdicts
from dsbox.config.slo import SLO


def _render(table) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def _result(*goodputs: GoodputResult) -> BenchResult:
    return BenchResult("opt-tiny", "humaneval", SLO(0.1, 0.025), 60, 0, (1.0,),
                       goodputs=list(goodputs))


def test_an_unbracketed_goodput_reads_as_a_lower_bound():
    open_top = GoodputResult("real", "prefill:tp=1;decode:tp=1", 2, 0.9, 64.0, None,
                             [(32.0, 0.92), (64.0, 0.93)])
    text = _render(goodput_table(_result(open_top)))
    assert ">= 64" in text and ">= 32" in text and "--goodput-probes" in text
    bracketed = GoodputResult("simulated", "colocated:tp=1*2", 2, 0.9, 132.0, 134.0,
                              [(128.0, 0.9), (134.0, 0.88)])
    text = _render(goodput_table(_result(bracketed)))
    assert ">=" not in text.replace("with >= 90%", "") and "132" in text and "134" in text
    assert "--goodput-probes" not in text
    none_met = GoodputResult("real", "colocated:tp=1*2", 2, 0.9, 0.0, None, [(1.0, 0.5)])
    assert ">= 0" not in _render(goodput_table(_result(none_met)))


def test_the_verdict_says_when_the_best_is_a_lower_bound():
    best = GoodputResult("real", "prefill:tp=1;decode:tp=1", 2, 0.9, 64.0, None, [])
    other = GoodputResult("real", "colocated:tp=1*2", 2, 0.9, 40.0, 48.0, [])
    (line,) = verdicts(_result(best, other))
    assert "at >= 32 req/s per GPU" in line and "1.60x colocated:tp=1*2" in line
    (line,) = verdicts(_result(other, GoodputResult("real", "p", 2, 0.9, 10.0, 12.0, [])))
    assert ">=" not in line
