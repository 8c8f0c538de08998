"""The runtime and the simulator route one trace the same way (one piece of routing code).

The trace is a burst of equal requests with long outputs: every routing decision then
depends only on how many requests each instance holds, not on how long a step takes, so
the real engine (with its own clock) and the simulator (with an A100 latency model) must
agree request by request. Requests are stamped with the instance that prefilled and the
one that decoded them.
"""

from __future__ import annotations

import pytest

from dsbox import SamplingParams
from dsbox.client import open_engine
from dsbox.config import EngineConfig, get_model_spec
from dsbox.config.placement import Placement
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.profile_source import load_profile
from dsbox.placement.sim_setup import build_setup
from dsbox.placement.simulator import simulate
from dsbox.workloads.trace import Trace

PLACEMENT = "prefill:tp=1*2;decode:tp=1*2"
PROMPT_LEN, OUTPUT_LEN = 12, 40


def simulated_assignment(n: int) -> list[tuple[int, int]]:
    spec = get_model_spec("opt-13b")
    setup = build_setup(Placement.parse(PLACEMENT), spec, load_profile("a100-80g", "opt-13b"),
                        ClusterSpec.parse("1x8", profile="a100-80g"))
    result = simulate(setup, Trace((0.0,) * n, (PROMPT_LEN,) * n, (OUTPUT_LEN,) * n))
    return [(lc.prefill_instance, lc.decode_instance) for lc in result.lifecycles]


@pytest.mark.parametrize("executor, n", [("inprocess", 6), ("workers", 8)])
def test_runtime_routes_a_burst_as_the_simulator_does(preln_ckpt, executor, n):
    cfg = EngineConfig(model=str(preln_ckpt), dtype="float32", device="cpu",
                       placement=PLACEMENT, executor=executor, kv_cache_memory=4 << 20)
    prompts = [[2] + [100 + 7 * i + j for j in range(PROMPT_LEN - 1)] for i in range(n)]
    with open_engine(cfg) as client:
        outs = client.generate(prompts, SamplingParams(max_tokens=OUTPUT_LEN, temperature=0,
                                                       ignore_eos=True))
    real = [(o.lifecycle.prefill_instance, o.lifecycle.decode_instance) for o in outs]
    assert real == simulated_assignment(n)
    assert {p for p, _ in real} == {0, 1} and {d for _, d in real} == {2, 3}
