"""Bad input at the command line: exactly one ``error:`` line, exit code 2, no traceback,
and nothing left behind (no file in /dev/shm, no worker process). Doubtful input gets one
``warning:`` line and runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.test_cli import DSBOX

SHM = Path("/dev/shm")
TWO_INSTANCES = "prefill:tp=1;decode:tp=1"


@pytest.fixture
def env(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    e = dict(os.environ, DSBOX_MODELS=str(models), HF_HUB_CACHE=str(tmp_path / "hub"),
             COLUMNS="250", NO_COLOR="1", OMP_NUM_THREADS="1")
    e.pop("TRITON_INTERPRET", None)  # as a user's shell has it
    return e


def _marked_processes(mark: str) -> set[int]:
    """Live processes whose environment carries ``mark``: the CLI's children (forkserver,
    workers, resource tracker) inherit it, other programs on the machine do not."""
    needle = f"DSBOX_TEST_MARK={mark}".encode()
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.add(int(d.name))
            except OSError:
                continue
    return pids


def _shm() -> set[str]:
    return {p.name for p in SHM.iterdir()} if SHM.is_dir() else set()


def _shm_in_use() -> set[str]:
    """Names in /dev/shm some live process maps or holds open (not leaked)."""
    used = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            for line in (d / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    used.add(line.split("/dev/shm/", 1)[1].split()[0])
            for fd in (d / "fd").iterdir():
                target = str(fd.readlink())
                if target.startswith("/dev/shm/"):
                    used.add(target[len("/dev/shm/"):])
        except OSError:
            continue
    return used


def _leaked_shm(before: set[str]) -> set[str]:
    """Files that appeared in /dev/shm and that no live process uses: a leak (the machine
    may run other programs that make their own)."""
    return _shm() - before - _shm_in_use()


def run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*DSBOX, *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def broken_ckpt(preln_ckpt, tmp_path_factory):
    """The tiny checkpoint with one tensor missing from its safetensors file."""
    from safetensors.torch import load_file, save_file

    dest = tmp_path_factory.mktemp("broken")
    shutil.copytree(preln_ckpt, dest, dirs_exist_ok=True)
    tensors = load_file(dest / "model.safetensors")
    name = next(n for n in tensors if "layers.1.fc1.weight" in n)
    del tensors[name]
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def _cases(preln: Path, broken: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty"
    empty.mkdir()
    no_config = tmp / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    ck = str(preln)
    return {
        "empty model dir": (["run", str(empty)], "is empty"),
        "no config.json": (["run", str(no_config)], "has no config.json"),
        "checkpoint error in a worker": (
            ["run", str(broken), "--placement", TWO_INSTANCES, "--kv-cache-memory", "4MiB"],
            "checkpoint lacks 1 tensor"),
        "KV budget error in a worker": (
            ["run", ck, "--placement", TWO_INSTANCES, "--kv-cache-memory", "256KiB"],
            "the KV pool of prefill instance 0 holds 160 tokens"),
        "triton on the CPU": (["run", ck, "--attention-backend", "triton"], "needs a CUDA GPU"),
        "temperature NaN": (["run", ck, "--temperature", "nan"], "temperature must be a finite"),
        "temperature infinite": (["run", ck, "--temperature", "inf"], "finite number"),
        "non-integer max tokens": (["run", ck, "--max-tokens", "2.5"], "--max-tokens"),
        "pool smaller than one sequence": (
            ["run", ck, "--kv-cache-memory", "1MiB"],
            "less than one sequence of 2048 tokens: raise kv_cache_memory to at least 3.0 MiB"),
        "/dev/shm too small": (
            ["run", ck, "--placement", TWO_INSTANCES, "--kv-cache-memory", "1TiB"],
            "docker run --shm-size"),
        "markup in a message": (["run", "[bold]x[/bold]"], "[bold]x[/bold]"),
        "serve: no chat template file": (
            ["serve", ck, "--chat-template", str(tmp / "none.toml"), "--port", "0"],
            "none.toml: no such file"),
        "serve: bad placement": (["serve", ck, "--placement", "nonsense", "--port", "0"],
                                 "role must be one of"),
        "serve: bad port": (["serve", ck, "--port", "70000"], "port must be in 0..65535"),
        "serve: KV budget error in a worker": (
            ["serve", ck, "--placement", TWO_INSTANCES, "--kv-cache-memory", "256KiB",
             "--port", "0"],
            "the KV pool of prefill instance 0 holds 160 tokens"),
    }


CASES = ["empty model dir", "no config.json", "checkpoint error in a worker",
         "KV budget error in a worker", "triton on the CPU", "temperature NaN",
         "temperature infinite", "non-integer max tokens", "pool smaller than one sequence",
         "/dev/shm too small", "markup in a message", "serve: no chat template file",
         "serve: bad placement", "serve: bad port", "serve: KV budget error in a worker"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_leaves_nothing(case, env, preln_ckpt, broken_ckpt,
                                                        tmp_path):
    args, needle = _cases(preln_ckpt, broken_ckpt, tmp_path)[case]
    mark = uuid.uuid4().hex
    env = dict(env, DSBOX_TEST_MARK=mark)
    shm_before = _shm()
    proc = run_cli(args, env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
    deadline = time.monotonic() + 5
    while (_marked_processes(mark) or _leaked_shm(shm_before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _marked_processes(mark)
    assert not _leaked_shm(shm_before)


def test_serve_on_a_busy_port_is_one_error_line(env, preln_ckpt):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cli(["serve", str(preln_ckpt), "--port", str(port)], env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error:") and f"cannot listen on 127.0.0.1:{port}" in line
    assert "starting" not in proc.stdout  # it failed before starting any worker


def test_more_cpu_workers_than_cores_is_a_warning(env, preln_ckpt):
    cores = len(os.sched_getaffinity(0))
    placement = f"prefill:tp=1*{cores};decode:tp=1"  # cores + 1 worker processes
    proc = run_cli(["run", str(preln_ckpt), "--placement", placement, "--kv-cache-memory",
                    "4MiB", "--max-tokens", "2", "-p", "Hi"], env)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and f"{cores + 1} CPU workers on {cores} cores" in warnings[0]


def test_checkpoint_without_tokenizer_is_a_warning(env, preln_ckpt, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(preln_ckpt / f, bare / f)
    proc = run_cli(["run", str(bare), "--max-tokens", "2", "-p", "Hi"], env)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "bundled GPT-2 BPE" in warnings[0]
    assert "ids may differ" in warnings[0]


def test_float_token_ids_are_rejected(preln_ckpt):
    from dsbox import LLM, SamplingParams

    with LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
             kv_cache_memory=4 << 20) as llm:
        with pytest.raises(ValueError, match="token ids must be integers, got 2.5"):
            llm.generate([[2, 2.5, 7]], SamplingParams(max_tokens=2))
        with pytest.raises(ValueError, match="prompt 1: token ids must be integers"):
            llm.generate([[2, 3], [True, 4]], SamplingParams(max_tokens=2))
        assert llm.stats().num_requests == 0  # nothing was queued

