"""`make gpu-check` on a machine without CUDA: one line, exit 0; its probe runner records a
failing or hanging probe instead of dying with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = dict(os.environ, CUDA_VISIBLE_DEVICES="")


def test_script_says_no_cuda_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path)],
                         cwd=ROOT, env=NO_CUDA, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0
    assert len(out.strip().splitlines()) == 1, out
    assert "no CUDA" in out and "Traceback" not in out
    assert json.loads((tmp_path / "gpu_check.json").read_text())["probes"] == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_target_says_no_cuda(tmp_path):
    env = dict(NO_CUDA, OUT=str(tmp_path))
    res = subprocess.run(["make", "-s", "gpu-check"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert out.strip().startswith("no CUDA") and len(out.strip().splitlines()) == 1, out
    assert (tmp_path / "summary.txt").exists()


def test_probe_failure_and_timeout_are_records(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sys.path.insert(0, str(ROOT))
    from scripts.gpu_check import run_probe, write_reports

    failed = run_probe("env", 120, tmp_path, tmp_path)  # no device: the probe raises
    assert failed["status"] == "fail" and "Error" in failed["error"]
    hung = run_probe("env", 0.5, tmp_path, tmp_path)  # cannot even import torch in time
    assert hung["status"] == "timeout"
    write_reports(tmp_path, {"cuda": "none"}, [failed, hung])
    summary = (tmp_path / "summary.txt").read_text()
    assert "[   fail] env" in summary and "[timeout] env" in summary
