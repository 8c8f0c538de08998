"""Placement ids onto the visible GPUs: instances may share a GPU, ranks of one may not."""

from __future__ import annotations

import pytest

from dsbox.config.placement import Placement, map_to_visible_devices


def _devices(text: str, visible: int, share: bool) -> list[tuple[int, ...]]:
    plans = map_to_visible_devices(Placement.parse(text).expanded(), visible, share=share)
    return [p.devices for p in plans]


def test_prefill_and_decode_share_one_gpu():
    assert _devices("prefill:tp=1;decode:tp=1", 1, share=True) == [(0,), (0,)]
    assert _devices("prefill:tp=1*2;decode:tp=2", 2, share=True) == [(0,), (1,), (0, 1)]


def test_two_ranks_of_one_instance_on_one_gpu_are_rejected():
    with pytest.raises(ValueError, match=r"ranks 0 and 1 .* GPU 0 .*Duplicate GPU"):
        _devices("prefill:tp=2;decode:tp=1", 1, share=True)
    # prefill takes 0,1 and decode 2,3; on 2 GPUs decode's pp=2 ranks map to 0 and 1: fine
    assert _devices("prefill:tp=2;decode:pp=2", 2, share=True) == [(0, 1), (0, 1)]
    # decode:tp=2 at ids 1,3 lands on GPU 1 twice with 2 visible
    with pytest.raises(ValueError, match="ranks 0 and 1 of one instance both map to GPU 1"):
        _devices("prefill:tp=1;decode:tp=2@1,3", 2, share=True)


def test_without_sharing_ids_must_be_visible():
    assert _devices("prefill:tp=2;decode:tp=2", 4, share=False) == [(0, 1), (2, 3)]
    with pytest.raises(ValueError, match="out of range, 2 GPU"):
        _devices("prefill:tp=1;decode:tp=2", 2, share=False)
    with pytest.raises(ValueError, match="no visible GPU"):
        _devices("colocated:tp=1", 0, share=True)
