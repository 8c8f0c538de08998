"""Alg. 1, Alg. 2 and the colocated search: valid plans, node alignment, monotone goodput."""

from __future__ import annotations

import dataclasses

import pytest

from dsbox.config.model_spec import get_model_spec
from dsbox.config.placement import InstanceSpec, Placement, layer_nodes
from dsbox.config.slo import SLO
from dsbox.placement.alg_high import phase_floor, plan_high, replicas
from dsbox.placement.alg_low import enumerate_units, plan_low
from dsbox.placement.capacity import rate_upper_bound, setup_rate
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.goodput import SearchSettings
from dsbox.placement.layout import first_fit
from dsbox.placement.plan import make_context, plan_search
from dsbox.placement.profile import StepOverhead
from dsbox.placement.profile_source import load_profile
from dsbox.placement.sim_setup import build_setup
from dsbox.placement.simulator import simulate
from dsbox.placement.workload import sample_requests, synthetic_lengths

FAST = SearchSettings(num_requests=800, min_requests=100, window=30.0, tolerance=0.05)
SHAREGPT_LIKE = synthetic_lengths(755, 200, n=3000, seed=0)


def _ctx(model="opt-13b", cluster="1x8", slo="chatbot-13b", settings=FAST):
    return make_context(model, cluster, slo, "sharegpt-like", lengths=SHAREGPT_LIKE,
                        settings=settings)


def _check_valid(plan, ctx):
    """Memory, divisibility, devices within the cluster and used once."""
    for placement in (plan.unit, plan.placement):
        placement.validate_for(ctx.spec, ctx.device_memory, num_devices=ctx.cluster.num_gpus,
                               min_kv_tokens=ctx.sample.max_total_tokens,
                               memory_utilization=ctx.profile.memory_utilization)
        for inst in placement.instances:
            assert ctx.profile.kv_tokens(ctx.spec, inst.tp, inst.pp) >= \
                ctx.sample.max_total_tokens


def _check_aligned(placement, num_layers, gpus_per_node):
    """Every prefill/decode pair that shares a node keeps each layer on one node."""
    singles = placement.expanded()
    prefills = [i for i in singles if i.role == "prefill"]
    decodes = [i for i in singles if i.role == "decode"]
    for p in prefills:
        p_nodes = layer_nodes(p, 0, num_layers, gpus_per_node)
        partners = [d for d in decodes
                    if layer_nodes(d, 0, num_layers, gpus_per_node)[0] == p_nodes[0]]
        assert partners, f"{p} has no decode instance on its nodes"
        for d in partners:
            assert layer_nodes(d, 0, num_layers, gpus_per_node) == p_nodes


@pytest.mark.parametrize("model, cluster", [("opt-66b", "4x8"), ("opt-13b", "2x4"),
                                            ("opt-66b", "2x8")])
def test_alg2_units_never_split_a_stage_across_nodes(model, cluster):
    ctx = _ctx(model, cluster)
    units = enumerate_units(ctx)
    assert units and any(u.pp_cross > 1 for u in units)
    for unit in units:
        for placement in (unit.unit_placement(ctx.cluster), unit.cluster_placement(ctx.cluster)):
            _check_aligned(placement, ctx.spec.num_layers, ctx.cluster.gpus_per_node)
            devices = [d for i in placement.instances for d in i.devices]
            assert len(set(devices)) == len(devices) and max(devices) < ctx.cluster.num_gpus


@pytest.mark.parametrize("algorithm", ["low", "high"])
def test_plans_respect_memory_and_divisibility(algorithm):
    ctx = _ctx("opt-66b", "2x8", "chatbot-66b")
    result = plan_search(ctx, algorithm)
    for plan in (result.disaggregated, result.colocated):
        assert plan.goodput_per_gpu > 0
        _check_valid(plan, ctx)
    if algorithm == "low":
        _check_aligned(result.disaggregated.placement, 64, 8)
    assert result.disaggregated.placement.disaggregated
    assert not result.colocated.placement.disaggregated


def test_plan_report_for_13b_chatbot():
    ctx = _ctx(cluster="1x4")
    result = plan_search(ctx, "low")
    data = result.to_json()
    for key in ("placement", "goodput_per_gpu", "colocated_placement",
                "colocated_goodput_per_gpu", "search_seconds"):
        assert key in data
    assert data["goodput_per_gpu"] > 0 and data["colocated_goodput_per_gpu"] > 0
    assert data["ratio"] == pytest.approx(data["goodput_per_gpu"]
                                          / data["colocated_goodput_per_gpu"])
    assert result.num_simulations > 0 and data["search_seconds"] > 0
    _check_valid(result.disaggregated, ctx)
    _check_valid(result.colocated, ctx)


@pytest.mark.parametrize("algorithm", ["low", "high"])
def test_plan_goodput_does_not_fall_when_slo_loosens(algorithm):
    tight = SLO.preset("chatbot-13b")
    values = []
    for factor in (1.0, 2.0):
        result = plan_search(_ctx(cluster="1x4", slo=tight.scaled(factor)), algorithm)
        values.append((result.disaggregated.goodput_per_gpu,
                       result.colocated.goodput_per_gpu))
    assert values[1][0] >= values[0][0] > 0
    assert values[1][1] >= values[0][1] > 0


def test_replicas_fill_or_meet_the_rate():
    assert replicas(5.0, 2, 3.0, 1, 8, None) == (2, 4)
    assert replicas(5.0, 2, 3.0, 1, 8, rate=20.0) == (4, 7)
    with pytest.raises(ValueError):
        replicas(5.0, 8, 3.0, 8, 8, None)


def test_first_fit_keeps_instances_inside_nodes():
    cluster = ClusterSpec(2, 4)
    p = first_fit([InstanceSpec("prefill", 3), InstanceSpec("decode", 2),
                   InstanceSpec("decode", 1)], cluster)
    assert str(p) == "prefill:tp=3@0,1,2;decode:tp=2@4,5;decode:tp=1@3"
    big = first_fit([InstanceSpec("colocated", 2, 3)], cluster)
    assert big.instances[0].devices == (0, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="does not fit"):
        first_fit([InstanceSpec("colocated", 4, 2)] * 2, cluster)


def test_kv_routes_over_nvlink_or_the_shared_network():
    """Aligned layers copy over NVLink; the share of the layers that change node goes over
    the network and occupies the links out of and into those nodes."""
    spec = get_model_spec("opt-13b")
    cluster = ClusterSpec(2, 4, network_bandwidth=1e9)
    profile = load_profile("a100-80g", "opt-13b")

    def route(text):
        setup = build_setup(Placement.parse(text), spec, profile, cluster)
        return setup.bandwidth[0][0], setup.links[0][0] if setup.links else ()

    assert route("prefill:tp=2,pp=2@0,1,4,5;decode:tp=2,pp=2@2,3,6,7") == (
        cluster.nvlink_bandwidth * 4, ())
    assert route("prefill:tp=4@0-3;decode:tp=4@4-7") == (1e9, (0, 3))
    # decode stage 0 (layers 0-19) on node 0 beside the prefill, stage 1 on node 1
    assert route("prefill:tp=2@0,1;decode:tp=1,pp=2@2,4") == (2e9, (0, 3))


@pytest.mark.parametrize("gbps", [25.0, 1.0])
def test_alg1_never_answers_worse_than_alg2(gbps):
    """Across nodes on a slow network Alg. 1 starts from Alg. 2's answer (KV inside
    nodes), so it never answers worse; a layout sending KV over a 1 Gbps link cannot
    win."""
    cluster = ClusterSpec.parse("2x8", network_bandwidth=gbps * 1e9 / 8)
    ctx = make_context("opt-66b", cluster, "chatbot-66b", "sharegpt-like",
                       lengths=SHAREGPT_LIKE, settings=FAST)
    low = plan_low(ctx)
    high = plan_high(ctx, start=low)
    assert low.goodput_per_gpu > 0
    assert high.goodput_per_gpu >= low.goodput_per_gpu
    _check_valid(high, ctx)
    if gbps < 2:
        assert not ctx.setup(high.unit).crosses_network()


def _throughput(setup, rate, n=400):
    sample = sample_requests(SHAREGPT_LIKE, n, seed=3)
    result = simulate(setup, sample.at_rate(rate))
    done = [lc for lc in result.lifecycles if lc.finish is not None]
    return len(done) / (max(lc.finish for lc in done) - min(lc.arrival for lc in done))


@pytest.mark.parametrize("text, gbps", [
    ("prefill:tp=1;decode:tp=1", 25.0),
    ("prefill:tp=1,pp=2*2;decode:tp=2,pp=2", 25.0),
    ("colocated:tp=2,pp=2", 25.0),
    ("prefill:tp=4@0-3;decode:tp=4@4-7", 5.0),  # KV over the network between 2 nodes
])
def test_rate_upper_bound_is_an_upper_bound(text, gbps):
    """Offered three times its bound, a setup completes requests no faster than the bound
    (step times' marginal costs over pp stages; the shared node links for KV)."""
    spec = get_model_spec("opt-13b")
    cluster = ClusterSpec(2, 4, network_bandwidth=gbps * 1e9 / 8)
    setup = build_setup(Placement.parse(text), spec, load_profile("a100-80g", "opt-13b"),
                        cluster)
    sample = sample_requests(SHAREGPT_LIKE, 400, seed=3)
    bound = rate_upper_bound(setup, sample)
    assert 0 < bound < float("inf")
    measured = _throughput(setup, 3 * bound)
    assert measured <= bound * 1.02
    assert measured >= 0.3 * bound  # and it is not a vacuous bound


@pytest.mark.parametrize("text", ["prefill:tp=2*2;decode:tp=1",
                                  "prefill:tp=1*2;decode:tp=2,pp=2"])
def test_rate_upper_bound_counts_the_kv_pulls_on_the_first_decode_stage(text):
    """With a 200 ms KV pull per request (all on the decode instance's first stage, however
    many stages it has) one decode instance cannot take 1000 / 200 requests per second; the
    bound says so, and the simulator stays under it."""
    spec = get_model_spec("opt-13b")
    profile = dataclasses.replace(load_profile("a100-80g", "opt-13b"),
                                  pull_overhead=StepOverhead(200.0))
    setup = build_setup(Placement.parse(text), spec, profile, ClusterSpec(2, 4))
    sample = sample_requests(SHAREGPT_LIKE, 400, seed=3)
    bound = rate_upper_bound(setup, sample)
    assert bound < 1e3 / 200.0
    assert setup_rate(setup, sample, None) <= bound * 1.0001
    measured = _throughput(setup, 3 * bound)
    assert 0.3 * bound <= measured <= bound * 1.02


def test_phase_floor_is_the_harmonic_bound():
    """A pairing's GPUs split between its phases: with phase goodputs x and y per GPU it
    serves at most 1/(1/x + 1/y) per GPU, so beating 1 with y = 2 needs x >= 2."""
    assert phase_floor(1.0, 2.0) == pytest.approx(2.0)
    assert 1 / (1 / phase_floor(1.0, 3.0) + 1 / 3.0) == pytest.approx(1.0)
    assert phase_floor(1.0, 1.0) == float("inf") and phase_floor(0.0, 1.0) == 0.0
