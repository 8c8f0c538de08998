"""Which device each rank runs on (``dsbox.engine.runtime.device_names``), tested without a
GPU: an explicit index in ``device`` picks the GPU of a one-device engine (``LLM(device=
"cuda:1")`` runs on cuda:1, not cuda:0); otherwise placement ids are visible GPU ids."""

from __future__ import annotations

import pytest

from dsbox.config.placement import Placement, map_to_visible_devices
from dsbox.engine.runtime.device_names import device_names, uses_one_device


def names(text: str, kind: str = "cuda", index: int | None = None, visible: int = 4, *,
          share: bool = False) -> list[tuple[str, ...]]:
    instances = map_to_visible_devices(Placement.parse(text).expanded(), visible, share=share)
    return device_names(kind, index, instances, visible, share=share)


def test_an_explicit_index_picks_the_gpu_of_a_one_device_engine():
    assert names("colocated:tp=1", index=1) == [("cuda:1",)]
    assert names("colocated:tp=1", index=3) == [("cuda:3",)]
    assert names("colocated:tp=1@2", index=1) == [("cuda:1",)]  # the device setting wins


def test_without_an_index_placement_ids_are_visible_gpu_ids():
    assert names("colocated:tp=1") == [("cuda:0",)]
    assert names("prefill:tp=1@1;decode:tp=1@0") == [("cuda:1",), ("cuda:0",)]
    assert names("prefill:tp=2;decode:tp=1*2") == [("cuda:0", "cuda:1"), ("cuda:2",),
                                                   ("cuda:3",)]


def test_several_gpus_keep_their_ids_whatever_the_index():
    assert names("prefill:tp=1;decode:tp=1", index=3) == [("cuda:0",), ("cuda:1",)]
    assert names("colocated:tp=2@2,3", index=0) == [("cuda:2", "cuda:3")]


def test_shared_devices_all_go_to_the_index():
    assert names("prefill:tp=1;decode:tp=1", index=1, visible=2, share=True) == [
        ("cuda:1",), ("cuda:1",)]
    # without an index, sharing takes ids modulo the visible GPUs
    assert names("prefill:tp=1;decode:tp=1*2", visible=2, share=True) == [
        ("cuda:0",), ("cuda:1",), ("cuda:0",)]
    assert not uses_one_device(Placement.parse("colocated:tp=2").expanded(), share=True)


def test_the_cpu_and_bad_indices():
    assert names("prefill:tp=2;decode:tp=1", kind="cpu", index=None) == [("cpu", "cpu"),
                                                                          ("cpu",)]
    with pytest.raises(ValueError, match=r"cuda:2 asked for, but 2 GPU\(s\) are visible"):
        names("colocated:tp=1", index=2, visible=2)
    with pytest.raises(ValueError, match="cpu or cuda"):
        names("colocated:tp=1", kind="mps")


def test_the_cpu_engine_runs_where_its_setup_says(preln_ckpt):
    """The in-process engine takes its device from the same mapping."""
    from dsbox.config import EngineConfig
    from dsbox.engine.runtime.setup import resolve_setup

    setup = resolve_setup(EngineConfig(model=str(preln_ckpt), device="cpu",
                                       placement="prefill:tp=1;decode:tp=2"))
    assert setup.names == [("cpu",), ("cpu", "cpu")]
    assert str(setup.run_device) == "cpu"
