"""``--placement auto`` without a profile: the documented default rule, and its reason."""

from __future__ import annotations

import pytest

from dsbox.cli.placement_choice import choose_placement
from dsbox.config import get_model_spec
from dsbox.devices import Devices, discover_devices


def test_default_rule_by_device_count():
    spec = get_model_spec("opt-tiny")
    two = choose_placement("auto", spec, Devices("cpu", 2, "cpu", 1 << 30))
    assert two.placement == "prefill:tp=1;decode:tp=1" and "2 devices" in two.rule
    assert "no latency profile for opt-tiny on cpu" in two.rule
    one = choose_placement(None, spec, Devices("cpu", 1, "cpu", 1 << 30))
    assert one.placement == "colocated:tp=1" and "one device" in one.rule


def test_a_known_gpu_is_planned_on_its_derived_profile():
    got = choose_placement("auto", get_model_spec("opt-13b"),
                           Devices("cuda", 8, "NVIDIA H100 80GB HBM3", 80 << 30))
    assert "derived" in got.rule and got.placement.count(":tp=") >= 1


def test_gpu_names_map_to_the_planner_table():
    assert Devices("cuda", 1, "NVIDIA H100 80GB HBM3", 0).profile_key == "h100"
    assert Devices("cuda", 1, "NVIDIA H100 PCIe", 0).profile_key == "h100-pcie"
    assert Devices("cuda", 1, "NVIDIA A100-SXM4-40GB", 0).profile_key == "a100-40g"
    assert Devices("cuda", 1, "NVIDIA H200", 0).profile_key == "h200"
    assert Devices("cuda", 1, "Tesla T4", 0).profile_key == "tesla-t4"
    assert Devices("cpu", 4, "cpu", 0).profile_key == "cpu"


def test_given_text_is_kept_and_checked():
    spec = get_model_spec("opt-tiny")
    got = choose_placement(" colocated:tp=2 ", spec, Devices("cpu", 8, "cpu", 1 << 30))
    assert got.placement == "colocated:tp=2" and got.rule == "given with --placement"
    with pytest.raises(ValueError):
        choose_placement("nonsense", spec, Devices("cpu", 8, "cpu", 1 << 30))


def test_this_machine_is_found():
    d = discover_devices()
    assert d.count >= 1 and d.kind in ("cpu", "cuda") and d.describe()
