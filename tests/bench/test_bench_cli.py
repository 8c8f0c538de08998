"""``dsbox bench`` end to end, the real console script in a subprocess: the simulator alone
(no weights), the engine here beside the simulator (the CPU acceptance run, small), and
``--endpoint`` on loopback against ``dsbox serve`` and against a minimal OpenAI-compatible
server (tests/bench/openai_server.py) that streams one chunk per token. Every run's figures
are recomputed from its raw per-request stamps in the JSON (tests/bench/recompute.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from dsbox.workloads import Trace, make_trace
from tests.bench.recompute import check_attainment_never_falls_with_slo_scale, check_run
from tests.test_cli import DSBOX

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("attainment_vs_rate.png", "attainment_vs_slo_scale.png", "latency_breakdown.png",
         "ttft_cdf.png", "tpot_cdf.png")
DISAGG = "prefill:tp=1;decode:tp=1"


@pytest.fixture
def env(tmp_path):
    models = tmp_path / "no-models"
    models.mkdir()
    e = dict(os.environ, DSBOX_MODELS=str(models), HF_HUB_CACHE=str(tmp_path / "hub"),
             COLUMNS="200", NO_COLOR="1", OMP_NUM_THREADS="1")
    e.pop("TRITON_INTERPRET", None)
    return e


def bench(args: list[str], env: dict, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*DSBOX, "bench", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def check_outputs(data: dict, plots_dir, stdout: str) -> None:
    for key in ("runs", "goodput_per_gpu", "slo", "real_vs_simulated"):
        assert key in data
    for run in data["runs"]:
        for key in ("placement", "rate", "slo_attainment", "ttft", "tpot", "requests"):
            assert key in run
        check_run(run, data["slo"])
        check_attainment_never_falls_with_slo_scale(run, data["slo"])
    for name in PLOTS:
        blob = (plots_dir / name).read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 10_000, name
    blocks = stdout.count("=" * 12 + " Serving Benchmark Result " + "=" * 12)
    assert blocks == len(data["runs"])
    assert "Mean TTFT (ms):" in stdout and "P99 E2EL (ms):" in stdout


def test_simulate_alone_needs_no_weights_or_device(env, tmp_path):
    trace = make_trace_file(tmp_path / "t.csv")
    out, plots = tmp_path / "out.json", tmp_path / "plots"
    proc = bench(["--simulate", "--profile", "a100-80g", "--model", "opt-66b",
                  "--placement", "prefill:tp=4;decode:tp=2,pp=2", "--compare", "colocated",
                  "--trace", str(trace), "--rates", "2,6,12", "--ttft", "0.4", "--tpot", "0.1",
                  "--engine-fit", "distserve", "--json", str(out), "--plots", str(plots)],
                 env, tmp_path)
    data = json.loads(out.read_text())
    check_outputs(data, plots, proc.stdout)
    assert {(r["target"], r["placement"]) for r in data["runs"]} == {
        ("simulated", "prefill:tp=4;decode:tp=2,pp=2"), ("simulated", "colocated:tp=4*2")}
    recorded = Trace.read(trace)
    run = data["runs"][0]
    assert run["rate"] == 2 and run["num_gpus"] == 8 and run["rate_per_gpu"] == 0.25
    own_rate = len(recorded) / recorded.arrivals[-1]
    assert [r["arrival"] for r in run["requests"]] == pytest.approx(
        [a * own_rate / 2 for a in recorded.arrivals])
    assert [r["num_output_tokens"] for r in run["requests"]] == list(recorded.output_lens)
    assert all(r["transfer_end"] is not None for r in run["requests"])
    goodputs = data["goodput_per_gpu"]
    assert len(goodputs) == 2 and all(g["goodput_per_gpu"] > 0 for g in goodputs)
    for g in goodputs:  # the search's answer passes and its upper bound fails
        assert g["probes"] and g["upper"] is not None
        tried = [(p["rate"], p["slo_attainment"]) for p in g["probes"]]
        tried += [(r["rate"], r["slo_attainment"]) for r in data["runs"]
                  if r["placement"] == g["placement"]]
        assert dict(tried)[g["goodput"]] >= 0.9 and dict(tried)[g["upper"]] < 0.9
    assert "Per-GPU goodput" in proc.stdout and "best (simulated)" in proc.stdout


def make_trace_file(path):
    from dsbox.workloads import load_workload

    trace = make_trace(load_workload("sharegpt", with_text=False), 4.0, 60, seed=1)
    trace.write_csv(path)
    return path


@pytest.fixture(scope="module")
def cpu_profile_dir(tmp_path_factory):
    """A profile of opt-tiny on this machine from the real profiler (a tiny grid), where the
    bench looks for one by default: profiles/<device>/opt-tiny.json under the run's cwd."""
    from dsbox.bench.profiles import default_profile_path, measure_profile
    from dsbox.placement.profiler import ProfileGrid

    cwd = tmp_path_factory.mktemp("bench-cwd")
    grid = ProfileGrid(prefill_batches=(1, 2), prefill_lengths=(64, 256, 1024),
                       decode_batches=(1, 4, 16), decode_contexts=(64, 512), repeats=1,
                       warmup=1, held_out=4)
    path = cwd / default_profile_path("opt-tiny")
    measure_profile({"device": "cpu"}, "opt-tiny", path, grid=grid)
    assert path.is_file()
    return cwd


def test_cpu_run_real_beside_simulated_with_colocated(env, cpu_profile_dir):
    """The acceptance run, small: sharegpt, two rates, --compare colocated, --simulate."""
    cwd = cpu_profile_dir
    # seed 29 draws three short ShareGPT requests (24, 30 and 21 output tokens): fast
    proc = bench(["--model", "opt-tiny", "--placement", DISAGG, "--workload", "sharegpt",
                  "--rates", "2,4",
                  "--num-requests", "3",
                  "--seed", "29", "--compare", "colocated", "--simulate",
                  "--goodput-probes", "0", "--json", "out.json", "--plots", "plots"],
                 env, cwd, timeout=420)
    data = json.loads((cwd / "out.json").read_text())
    check_outputs(data, cwd / "plots", proc.stdout)
    series = {(r["target"], r["placement"]) for r in data["runs"]}
    assert series == {(t, p) for t in ("real", "simulated")
                      for p in (DISAGG, "colocated:tp=1*2")}
    assert len(data["runs"]) == 8 and len(data["real_vs_simulated"]) == 4
    for real in (r for r in data["runs"] if r["target"] == "real"):
        sim = next(s for s in data["runs"] if s["target"] == "simulated"
                   and s["placement"] == real["placement"] and s["rate"] == real["rate"])
        # the same requests: arrivals, prompt lengths and exactly the dataset output lengths
        for a, b in zip(real["requests"], sim["requests"], strict=True):
            assert a["arrival"] == pytest.approx(b["arrival"])
            assert a["num_prompt_tokens"] == b["num_prompt_tokens"]
            assert a["num_output_tokens"] == b["num_output_tokens"] == len(a["token_times"])
            assert a["finish_reason"] == "length"
            assert a["prefill_start"] >= a["arrival"] and a["finish"] >= a["token_times"][-1]
        assert real["breakdown"]["count"] == 3
        # how fast the engine's steps ran against the profile, from its step log
        assert real["step_time_vs_profile"] > 0
        assert sim["step_time_vs_profile"] is None
    assert all(row["step_time_vs_profile"] > 0 for row in data["real_vs_simulated"])
    disagg = [r for r in data["runs"] if r["target"] == "real" and r["placement"] == DISAGG]
    assert all(r["transfer"]["count"] == 3 for r in disagg)
    assert any(q["kv_bytes"] > 0 for r in disagg for q in r["requests"])
    assert "Measured against simulated" in proc.stdout and "steps / profile" in proc.stdout


@pytest.fixture
def endpoint():
    from dsbox.client import open_engine
    from tests.bench.openai_server import CompletionsServer

    with open_engine(model="opt-tiny", device="cpu", max_model_len=1024,
                     kv_cache_memory=16 << 20) as client:
        server = CompletionsServer(client, "opt-tiny-test").start()
        try:
            yield server
        finally:
            server.stop()


def test_endpoint_streams_and_stamps_each_token(env, tmp_path, endpoint):
    from dsbox.workloads import load_workload

    proc = bench(["--endpoint", endpoint.url, "--model", "opt-tiny", "--workload", "humaneval",
                  "--rates", "4",
                  "--num-requests", "4", "--seed", "5", "--goodput-probes", "0",
                  "--json", "out.json", "--plots", "plots"], env, tmp_path)
    data = json.loads((tmp_path / "out.json").read_text())
    check_outputs(data, tmp_path / "plots", proc.stdout)
    (run,) = data["runs"]
    assert run["target"] == "endpoint" and endpoint.num_requests == 4
    expected = make_trace(load_workload("humaneval"), 4.0, 4, seed=5)
    reqs = run["requests"]
    assert [r["num_prompt_tokens"] for r in reqs] == list(expected.prompt_lens)  # usage
    assert [r["num_output_tokens"] for r in reqs] == list(expected.output_lens)
    assert [len(r["token_times"]) for r in reqs] == list(expected.output_lens)
    assert [r["arrival"] for r in reqs] == pytest.approx(list(expected.arrivals))
    for r in reqs:
        assert r["finish_reason"] == "length" and r["error"] is None
        assert r["arrival"] < r["token_times"][0] <= r["token_times"][-1] <= r["finish"]
        assert r["prefill_start"] is None  # the server's inside is not seen
    assert run["breakdown"] is None


def test_endpoint_against_dsbox_serve_on_loopback(env, tmp_path):
    """The real server (``dsbox serve``, disaggregated, in its own process) as the endpoint:
    every request generates exactly its length and the figures recompute from the stamps."""
    from dsbox.workloads import load_workload
    from tests.server.conftest import start_server

    srv = start_server(["opt-tiny", "--placement", DISAGG, "--device", "cpu",
                        "--max-model-len", "1024", "--kv-cache-memory", "32MiB"])
    try:
        proc = bench(["--endpoint", srv.url, "--model", "opt-tiny", "--placement", DISAGG,
                      "--workload", "humaneval", "--rates", "4", "--num-requests", "4",
                      "--seed", "5", "--goodput-probes", "0", "--json", "out.json",
                      "--plots", "plots"], env, tmp_path)
    finally:
        assert srv.stop() == 0, srv.output()
    data = json.loads((tmp_path / "out.json").read_text())
    check_outputs(data, tmp_path / "plots", proc.stdout)
    (run,) = data["runs"]
    assert run["target"] == "endpoint" and run["num_gpus"] == 2
    expected = make_trace(load_workload("humaneval"), 4.0, 4, seed=5)
    reqs = run["requests"]
    assert [r["num_output_tokens"] for r in reqs] == list(expected.output_lens)
    assert [len(r["token_times"]) for r in reqs] == list(expected.output_lens)
    assert all(r["finish_reason"] == "length" and r["error"] is None for r in reqs)
