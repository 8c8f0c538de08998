"""``dsbox plan`` end to end (small search settings to stay quick)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dsbox.cli import make_app

QUICK = ["--window", "30", "--num-requests", "800", "--min-requests", "100",
         "--tolerance", "0.05"]
ARGS = ["plan", "--model", "opt-13b", "--cluster", "1x8", "--profile", "a100-80g",
        "--workload", "sharegpt", "--slo", "chatbot-13b"]


def test_plan_json_for_13b_chatbot_on_1x8():
    result = CliRunner().invoke(make_app(), [*ARGS, *QUICK, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("placement", "goodput_per_gpu", "colocated_placement",
                "colocated_goodput_per_gpu", "search_seconds", "ratio"):
        assert key in data
    assert data["goodput_per_gpu"] > 0 and data["colocated_goodput_per_gpu"] > 0
    assert data["placement"].startswith("prefill:")
    assert data["colocated_placement"].startswith("colocated:")


def test_plan_text_report():
    result = CliRunner().invoke(make_app(), [*ARGS, *QUICK, "--algorithm", "high",
                                             "--model", "opt-66b", "--slo", "chatbot-66b"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("Best: ") == 1 and "why: " in out
    assert "disaggregated (Alg. 1)" in out and "colocated (vLLM++)" in out
    assert "req/s per GPU" in out and "disaggregated / colocated" in out
    assert "search:" in out


def test_plan_bad_input_is_one_error_line(tmp_path):
    runner = CliRunner()
    for extra in (["--cluster", "8"], ["--slo", "nope"], ["--model", "opt-nonexistent"],
                  ["--algorithm", "mid"], ["--window", "-1"], ["--slo-scale", "0"],
                  ["--slo-scale", "3"], ["--profile", str(tmp_path)],
                  ["--profile", "tpu-v9"]):
        result = runner.invoke(make_app(), [*ARGS, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output
    # a model without a profile: one error that lists the profiles there are
    result = runner.invoke(make_app(), [*ARGS, "--profile", str(tmp_path)])
    assert "a100-80g (opt-13b, opt-66b)" in result.output and "h100" in result.output


def test_plan_takes_the_model_default_slo_from_the_registry():
    args = ["plan", "--model", "opt-66b", "--cluster", "1x8", *QUICK, "--json"]
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["slo"].startswith("chatbot-66b: TTFT <= 2.5 s, TPOT <= 0.15 s")
    assert data["best"]["mode"] in ("colocated", "disaggregated")
    assert data["best"]["headline"].startswith("Best: ")


def test_plan_derives_a_profile_for_opt_175b_and_says_so():
    args = ["plan", "--model", "opt-175b", "--cluster", "4x8", "--profile", "a100-80g",
            *QUICK]
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "chatbot-175b" in out  # the model's own SLO preset
    assert "profile derived for opt-175b on a100-80g" in out and "median" in out
    assert "Best: " in out
