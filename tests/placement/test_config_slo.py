"""SLO presets, parsing, scaling and validation."""

from __future__ import annotations

import pytest

from dsbox.config.slo import SLO, SLO_PRESETS


def test_presets_are_the_papers():
    assert SLO_PRESETS == {
        "chatbot-13b": (0.25, 0.1),
        "chatbot-66b": (2.5, 0.15),
        "chatbot-175b": (4.0, 0.2),
        "code-66b": (0.125, 0.2),
        "summarization-66b": (15.0, 0.15),
    }
    slo = SLO.preset("Chatbot-66B")
    assert (slo.ttft, slo.tpot, slo.attainment, slo.name) == (2.5, 0.15, 0.9, "chatbot-66b")


def test_parse_preset_or_pair():
    assert SLO.parse("code-66b") == SLO.preset("code-66b")
    slo = SLO.parse(" 0.5 , 0.05 ", attainment=0.99)
    assert (slo.ttft, slo.tpot, slo.attainment) == (0.5, 0.05, 0.99)


@pytest.mark.parametrize("text", ["nope", "1,2,3", "a,b", "0,0.1", "-1,0.1"])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        SLO.parse(text)


@pytest.mark.parametrize("kwargs", [dict(ttft=0, tpot=1), dict(ttft=1, tpot=float("inf")),
                                    dict(ttft=1, tpot=1, attainment=0),
                                    dict(ttft=1, tpot=1, attainment=1.5)])
def test_validation(kwargs):
    with pytest.raises(ValueError):
        SLO(**kwargs)


def test_scaled_and_met():
    slo = SLO.preset("chatbot-13b").scaled(2)
    assert (slo.ttft, slo.tpot) == (0.5, 0.2)
    assert slo.met(0.5, 0.2) and not slo.met(0.51, 0.1) and not slo.met(None, 0.1)
    assert slo.attainment_of([(0.1, 0.1), (1.0, 0.1)]) == 0.5
    with pytest.raises(ValueError):
        slo.scaled(0)
