"""Placement text form (parse/print round trip), device assignment and validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsbox.config.model_spec import get_model_spec
from dsbox.config.placement import InstanceSpec, Placement, layer_nodes, parse_devices

GIB = 2**30


@pytest.mark.parametrize("text", [
    "colocated:tp=2",
    "prefill:tp=2;decode:tp=1",
    "prefill:tp=1*2;decode:tp=2,pp=2",
    "prefill:tp=2@0,1;decode:tp=2@4,5",
    "colocated:tp=4*2@0,1,2,3,4,5,6,7",
])
def test_canonical_text_round_trips(text):
    p = Placement.parse(text)
    assert p.format() == text
    assert Placement.parse(p.format()) == p


def test_parse_details():
    p = Placement.parse(" prefill : tp=1 * 2 ; decode:pp=2,tp=2 @ 4-7 ")
    assert p.instances == (InstanceSpec("prefill", 1, 1, 2),
                           InstanceSpec("decode", 2, 2, 1, (4, 5, 6, 7)))
    assert str(p) == "prefill:tp=1*2;decode:tp=2,pp=2@4,5,6,7"
    assert Placement.parse("prefill;decode:replicas=3").instances[1].replicas == 3
    assert parse_devices("0,2-4,9") == (0, 2, 3, 4, 9)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("prefill:tp=2", "needs a decode"),
    ("decode:tp=1", "needs a prefill"),
    ("colocated:tp=1;decode:tp=1", "not a mix"),
    ("router:tp=1", "role"),
    ("prefill:tp=0;decode:tp=1", "tp must be"),
    ("prefill:tq=1;decode:tp=1", "bad parameter"),
    ("prefill:tp=1,tp=2;decode:tp=1", "given twice"),
    ("prefill:tp=x;decode:tp=1", "not an integer"),
    ("prefill:tp=2@0;decode:tp=1", "needs 2 devices"),
    ("prefill:tp=2@0,0;decode:tp=1", "twice"),
    ("prefill:tp=1@3;decode:tp=1@3", "more than once"),
    ("prefill:tp=1@3-1;decode:tp=1", "backwards"),
    ("prefill:tp=1*2*3;decode:tp=1", "not an integer"),
])
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Placement.parse(text)


def test_devices_assigned_in_order_skipping_explicit():
    p = Placement.parse("prefill:tp=2*2;decode:tp=2@0,1").assigned()
    assert p.instances[0].devices == (2, 3, 4, 5)
    assert p.instances[1].devices == (0, 1)
    singles = p.expanded()
    assert [s.devices for s in singles] == [(2, 3), (4, 5), (0, 1)]
    assert p.num_devices == 6 and p.disaggregated


def test_stage_devices_and_layer_nodes():
    inst = InstanceSpec("decode", tp=2, pp=2, replicas=1, devices=(0, 1, 8, 9))
    assert inst.stage_devices(0, 0) == (0, 1) and inst.stage_devices(0, 1) == (8, 9)
    nodes = layer_nodes(inst, 0, num_layers=4, gpus_per_node=8)
    assert nodes == [{0}, {0}, {1}, {1}]


def test_validate_for_divisibility_and_memory():
    spec = get_model_spec("opt-66b")  # 72 heads, 64 layers, ~131 GB of fp16 weights
    Placement.parse("prefill:tp=2;decode:tp=4").validate_for(spec, 80 * GIB, num_devices=8)
    with pytest.raises(ValueError, match="not divisible by tp=5"):
        Placement.parse("prefill:tp=5;decode:tp=4").validate_for(spec, 80 * GIB)
    with pytest.raises(ValueError, match="not divisible by pp=3"):
        Placement.parse("prefill:tp=2,pp=3;decode:tp=4").validate_for(spec, 80 * GIB)
    with pytest.raises(ValueError, match="GB of weights"):
        Placement.parse("prefill:tp=1;decode:tp=4").validate_for(spec, 80 * GIB)
    with pytest.raises(ValueError, match="only 4 available"):
        Placement.parse("prefill:tp=2;decode:tp=4").validate_for(spec, 80 * GIB, num_devices=4)
    with pytest.raises(ValueError, match="out of range"):
        Placement.parse("prefill:tp=2@6,7;decode:tp=2@8,9").validate_for(
            spec, 80 * GIB, num_devices=9)
    with pytest.raises(ValueError, match="KV"):  # weights fit, a 2048-token KV does not
        Placement.parse("colocated:tp=2").validate_for(spec, 80 * GIB, min_kv_tokens=10**6)


_instance = st.builds(
    lambda role, tp, pp, n: InstanceSpec(role, tp, pp, n),
    st.sampled_from(["prefill", "decode"]), st.integers(1, 8), st.integers(1, 4),
    st.integers(1, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(_instance, min_size=1, max_size=4), st.booleans())
def test_round_trip_property(instances, assign):
    roles = {i.role for i in instances}
    if roles != {"prefill", "decode"}:
        instances = instances + [InstanceSpec(({"prefill", "decode"} - roles or {"decode"})
                                              .pop())]
    p = Placement(tuple(instances))
    if assign:
        p = p.assigned()
    assert Placement.parse(p.format()) == p
    assert Placement.parse(p.format()).format() == p.format()
