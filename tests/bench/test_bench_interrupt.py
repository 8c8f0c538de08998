"""Ctrl-C in a long ``dsbox bench`` loses nothing that finished: the runs done so far are
summarised and written to ``--json`` (marked ``interrupted``), the engine stops, and the
exit code is 130."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.bench.recompute import check_run
from tests.bench.test_bench_cli import env  # noqa: F401  (the fixture)
from tests.test_cli import DSBOX


def test_ctrl_c_keeps_the_finished_runs(env, tmp_path):  # noqa: F811
    proc = subprocess.Popen(
        [*DSBOX, "bench", "--model", "opt-tiny", "--dummy-weights", "--device", "cpu",
         "--placement", "colocated:tp=1", "--workload", "humaneval", "--num-requests", "4",
         "--rates", "2,3,4,5,6,7,8", "--seed", "5", "--json", "out.json"],
        env=dict(env, PYTHONUNBUFFERED="1"), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:  # the first run's result block has ended
            seen.append(line)
            if line.startswith("=====") and sum(s.startswith("=====") for s in seen) == 2:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(seen) + out
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err, err[-4000:]
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["interrupted"] is True
    assert 1 <= len(data["runs"]) < 7 and data["goodput_per_gpu"] == []
    assert data["workload"] == "humaneval" and data["num_requests"] == 4
    for run in data["runs"]:
        check_run(run, data["slo"])
    assert "SLO attainment (both" in out and "interrupted (Ctrl-C)" in out
