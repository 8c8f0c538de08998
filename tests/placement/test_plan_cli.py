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
    assert "disaggregated (Alg. 1)" in out and "colocated (vLLM++)" in out
    assert "req/s per GPU" in out and "disaggregated / colocated" in out
    assert "search:" in out


def test_plan_bad_input_is_one_error_line():
    runner = CliRunner()
    for extra in (["--cluster", "8"], ["--slo", "nope"], ["--model", "opt-175b"],
                  ["--algorithm", "mid"], ["--window", "-1"]):
        result = runner.invoke(make_app(), [*ARGS, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output
