"""KV pool sizing on a shared GPU: total memory less every co-located worker's weights."""

from __future__ import annotations

import pytest

from dsbox.config import get_model_spec
from dsbox.engine.model.kv_pool import kv_pool_budgets, kv_pool_bytes

GiB = 1 << 30
H200 = 143_771_058_176  # bytes, as torch reports one


def test_two_workers_split_what_the_weights_leave():
    got = kv_pool_bytes(100 * GiB, [10 * GiB, 20 * GiB], fraction=0.9, reserve_bytes=GiB)
    assert got == (90 * GiB - 30 * GiB - 2 * GiB) // 2


def test_opt13b_prefill_and_decode_on_one_h200_fit():
    """The race the issue names: each worker taking 90% of the free memory it saw before the
    other had loaded planned ~144 GB on a 141 GB GPU. From totals, it all fits."""
    weights = int(get_model_spec("opt-13b").weight_bytes("float16"))
    pools = kv_pool_budgets([0, 0], [weights, weights], H200)
    assert pools[0] == pools[1] > 20 * GiB
    planned = sum(pools) + 2 * weights + 2 * (2 * GiB)
    assert planned <= 0.9 * H200
    # the old rule, for contrast: 90% of the free memory each worker saw after loading its
    # own weights but before the other loaded, halved (share_device=2): over the device
    old_pool = int(0.9 * (H200 - weights) / 2)
    assert 2 * old_pool + 2 * weights > H200


def test_order_does_not_matter_and_devices_are_independent():
    a = kv_pool_budgets([0, 1, 0], [5 * GiB, 7 * GiB, 9 * GiB], {0: 80 * GiB, 1: 40 * GiB},
                        reserve_bytes=0, fraction=1.0)
    b = kv_pool_budgets([0, 0, 1], [9 * GiB, 5 * GiB, 7 * GiB], {0: 80 * GiB, 1: 40 * GiB},
                        reserve_bytes=0, fraction=1.0)
    assert a[0] == a[2] == b[0] == b[1] == (80 - 14) * GiB // 2
    assert a[1] == b[2] == 33 * GiB
    # a decode process on GPU 1 importing GPU 0's pool opens a CUDA context on GPU 0
    c = kv_pool_budgets([0, 1], [5 * GiB, 7 * GiB], 40 * GiB, reserve_bytes=0, fraction=1.0,
                        extra_bytes={0: GiB})
    assert c == [34 * GiB, 33 * GiB]


def test_weights_beyond_the_device_raise():
    with pytest.raises(ValueError, match="nothing is left"):
        kv_pool_bytes(80 * GiB, [40 * GiB, 40 * GiB])
    with pytest.raises(ValueError):
        kv_pool_bytes(80 * GiB, [])
    with pytest.raises(ValueError):
        kv_pool_budgets([0], [1, 2], 80 * GiB)
