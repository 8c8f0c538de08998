"""``--placement auto`` without a profile: the documented default rule, and its reason."""

from __future__ import annotations

import pytest

from dsbox.cli.placement_choice import choose_placement
from dsbox.config import get_model_spec
from dsbox.devices import Devices, discover_devices


def test_default_rule_by_device_count():
    spec = get_model_spec("opt-tiny")
    two = choose_placement("auto", spec, Devices("cpu", 2, "cpu", 1 << 30))
    assert two.placement == "prefill:tp=1;decode:tp=1" and "2 cores" in two.rule
    one = choose_placement(None, spec, Devices("cuda", 1, "NVIDIA H100", 80 << 30))
    assert one.placement == "colocated:tp=1" and "1 GPU" in one.rule
    assert "no latency profile for opt-tiny on NVIDIA H100" in one.rule


def test_given_text_is_kept_and_checked():
    spec = get_model_spec("opt-tiny")
    got = choose_placement(" colocated:tp=2 ", spec, Devices("cpu", 8, "cpu", 1 << 30))
    assert got.placement == "colocated:tp=2" and got.rule == "given with --placement"
    with pytest.raises(ValueError):
        choose_placement("nonsense", spec, Devices("cpu", 8, "cpu", 1 << 30))


def test_this_machine_is_found():
    d = discover_devices()
    assert d.count >= 1 and d.kind in ("cpu", "cuda") and d.describe()
