"""``--placement auto``: the planner's verdict on a profile, else the default rule."""

from __future__ import annotations

import pytest

from dsbox.placement.auto import choose_placement, default_rule
from tests.placement.test_search import FAST, SHAREGPT_LIKE


@pytest.fixture(autouse=True)
def _no_local_profiles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no profiles/ directory from `dsbox profile` here


def test_with_a_profile_the_planner_decides():
    choice = choose_placement("opt-13b", "a100-80g", 4, settings=FAST, lengths=SHAREGPT_LIKE)
    assert choice.source == "plan" and choice.profile == "a100-80g"
    assert choice.placement.num_devices <= 4
    assert choice.placement.disaggregated == (choice.mode == "disaggregated")
    d, c = choice.disagg_goodput, choice.colocated_goodput
    assert d > 0 and c > 0
    if choice.mode == "disaggregated":
        assert d > c
    else:
        assert c >= d / (1 + FAST.tolerance)
    assert choice.reason.startswith(f"Best: {choice.mode}") and "chatbot-13b" in choice.slo


def test_a_gpu_nobody_profiled_gets_a_derived_profile_and_says_so():
    choice = choose_placement("opt-30b", "h100", 4, settings=FAST, lengths=SHAREGPT_LIKE)
    assert choice.source == "plan" and choice.profile == "h100"
    assert "derived" in choice.reason and "chatbot-66b" in choice.slo


@pytest.mark.parametrize("count, mode, text", [(2, "disaggregated", "prefill:tp=1;decode:tp=1"),
                                               (1, "colocated", "colocated:tp=1")])
def test_without_a_profile_the_default_rule_says_so(count, mode, text):
    choice = choose_placement("opt-125m", "cpu", count)
    assert choice.source == "rule" and choice.mode == mode
    assert choice.placement.format(False) == text
    assert "default rule" in choice.reason and "dsbox profile opt-125m" in choice.reason


def test_a_local_profile_from_dsbox_profile_is_used(tmp_path):
    from dsbox.placement.profile_source import load_profile

    prof = load_profile("a100-80g", "opt-13b")
    prof.device = "mygpu"
    prof.save(tmp_path / "profiles" / "mygpu" / "opt-13b.json")
    choice = choose_placement("opt-13b", "mygpu", 2, settings=FAST, lengths=SHAREGPT_LIKE)
    assert choice.source == "plan" and choice.profile == "mygpu"


def test_no_placement_meeting_the_slo_falls_back_to_the_rule():
    choice = choose_placement("opt-13b", "a100-80g", 2, slo="0.001,0.001", settings=FAST,
                              lengths=SHAREGPT_LIKE)
    assert choice.source == "rule" and "no placement meets" in choice.reason


def test_bad_counts():
    with pytest.raises(ValueError):
        default_rule(0, "")
    with pytest.raises(ValueError):
        choose_placement("opt-13b", "a100-80g", 0)
