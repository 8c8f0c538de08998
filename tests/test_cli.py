"""The ``dsbox`` command line, run as the real console script in a subprocess: ``models``,
``run`` (its EngineConfig options reach the engine), and bad input that must end with one
error line and exit code 2, never a traceback."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from dsbox.cli import make_app
from dsbox.cli.options import field_help, option_name, parse_bytes
from dsbox.config import DEFAULT_MODEL, EngineConfig, load_registry

SCRIPT = Path(sys.executable).with_name("dsbox")
DSBOX = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "dsbox"]


@pytest.fixture
def env(tmp_path):
    """A hermetic environment: empty weight folders, a wide terminal for the tables."""
    models, hub = tmp_path / "models", tmp_path / "hub"
    models.mkdir()
    hub.mkdir()
    e = dict(os.environ, DSBOX_MODELS=str(models), HF_HUB_CACHE=str(hub), COLUMNS="250",
             NO_COLOR="1", OMP_NUM_THREADS="1")
    e.pop("HF_HOME", None)
    return e


def dsbox(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*DSBOX, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_usage_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr


# --- the commands ---------------------------------------------------------------------------
def test_help_lists_the_commands(env):
    proc = dsbox("--help", env=env)
    assert proc.returncode == 0
    assert "models" in proc.stdout and "run" in proc.stdout
    mod = subprocess.run([sys.executable, "-m", "dsbox", "--help"], env=env,
                         capture_output=True, text=True)
    assert mod.returncode == 0 and "models" in mod.stdout


def test_models_table(env, preln_ckpt):
    shutil.copytree(preln_ckpt, Path(env["DSBOX_MODELS"]) / "opt-1.3b")
    proc = dsbox("models", env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = {line.split()[1]: line for line in out.splitlines()
             if line.startswith("│") and len(line.split()) > 1}
    for name in load_registry():
        assert name in lines, name
    assert "125.2 M" in lines["opt-125m"] and "0.25 GB" in lines["opt-125m"]
    assert "36 KiB" in lines["opt-125m"]
    assert "2304 KiB" in lines["opt-66b"] and "131.44 GB" in lines["opt-66b"]
    assert "found" in lines["opt-tiny"] and "bundled" in lines["opt-tiny"]
    assert "found" in lines["dsbox-chat"] and "bundled checkpoint" in lines["dsbox-chat"]
    assert "found" in lines["opt-1.3b"]
    assert str(Path(env["DSBOX_MODELS"]) / "opt-1.3b") in out
    assert "missing" in lines["opt-13b"]
    assert "models--facebook--opt-13b" in out  # where it was looked for


def test_run_default_model(env):
    """What `make run` does: the bundled chat model (no files outside the package), a couple
    of chat prompts, TTFT/TPOT in ms."""
    proc = dsbox("run", "--max-tokens", "6", env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{DEFAULT_MODEL} (bundled checkpoint" in out
    assert out.count("prompt:") == 2 and out.count("output:") == 2
    assert "prompt: What is the capital of France?" in out  # sent as one chat turn
    assert "TTFT" in out and "TPOT" in out and " ms" in out and "tokens/s" in out
    assert "placement chosen by: default rule" in out  # --placement auto, the default


def test_run_options_reach_the_engine(env, preln_ckpt):
    per_block = 2 * 3 * 16 * 64 * 4
    proc = dsbox("run", str(preln_ckpt), "--prompt", "Hello world", "-p", "Once upon a time",
                 "-p", "x", "--max-tokens", "5", "--dtype", "float32", "--device", "cpu",
                 "--kv-cache-memory", "4MiB", "--max-num-seqs", "2", "--block-size", "16",
                 "--attention-backend", "torch", "--placement", "colocated:tp=1", "--no-tui",
                 env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{(4 << 20) // per_block} KV blocks of 16 tokens" in out
    assert "placement colocated:tp=1" in out and "chosen by: given with --placement" in out
    assert "M parameters, float32 on cpu, placement" in out  # the client's EngineInfo
    assert out.count("output:") == 3 and "Once upon a time" in out


def test_run_dummy_weights(env):
    proc = dsbox("run", "opt-125m", "--dummy-weights", "--max-tokens", "2", "-p", "Hi",
                 "--kv-cache-memory", "16MiB", "--max-model-len", "128", "--dtype", "bfloat16",
                 env=env)
    assert proc.returncode == 0, proc.stderr
    assert "opt-125m" in proc.stdout and "125.2 M parameters" in proc.stdout
    assert "parameters, bfloat16 on cpu" in proc.stdout


# --- bad input: one line on stderr, exit code 2 ---------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (["run", "gpt-17"], ["error:", "gpt-17", "known: dsbox-chat, opt-tiny"]),
    (["run", "--dtype", "fp8"], ["error:", "dtype", "fp8"]),
    (["run", "opt-125m"], ["error:", "no weights for opt-125m", "--dummy-weights"]),
    (["run", "--max-tokens", "0"], ["error:", "max_tokens"]),
    (["run", "--block-size", "7"], ["error:", "block_size"]),
    (["run", "--device", "tpu"], ["error:", "device"]),
    (["run", "--placement", "nonsense"], ["error:"]),
    (["run", "--slo", "fast"], ["error:", "unknown SLO preset 'fast'"]),
    (["run", "--slo", "0.2,-1"], ["error:", "SLO tpot"]),
    (["run", "--workload", "poems"], ["error:", "unknown workload 'poems'"]),
    (["run", "--rate", "0"], ["error:", "load rate"]),
    (["run", "--chat-template", "/nonexistent.toml"], ["error:", "no such file"]),
    (["run", "--temperature", "-1"], ["error:", "temperature"]),
], ids=["unknown model", "bad dtype", "no weights", "max tokens", "block size", "device",
        "placement", "slo preset", "slo numbers", "workload", "rate", "chat template",
        "temperature"])
def test_bad_input_is_one_error_line(env, args, needles):
    proc = dsbox(*args, env=env)
    assert_usage_error(proc, *needles)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if "no weights" in args[-1] or args == ["run", "opt-125m"]:
        assert env["DSBOX_MODELS"] in proc.stderr and "models--facebook--opt-125m" in proc.stderr


def test_bad_option_values_are_usage_errors(env):
    assert_usage_error(dsbox("run", "--kv-cache-memory", "12XB", env=env), "12XB")
    assert_usage_error(dsbox("run", "--max-num-seqs", "many", env=env), "--max-num-seqs")
    assert_usage_error(dsbox("nosuchcommand", env=env))


# --- options come from EngineConfig ---------------------------------------------------------
def test_every_engine_field_is_an_option():
    command = typer.main.get_command(make_app())
    run = command.commands["run"]
    opts = {o for p in run.params if p.param_type_name == "option" for o in p.opts}
    for f in dataclasses.fields(EngineConfig):
        if f.name == "model":
            continue
        assert option_name(f.name) in opts, f.name
    assert {"--prompt", "--max-tokens"} <= opts
    bools = [p for p in run.params if p.name == "dummy_weights"]
    assert bools and bools[0].secondary_opts == ["--no-dummy-weights"]


def test_option_help_comes_from_the_config():
    fields = {f.name: f for f in dataclasses.fields(EngineConfig)}
    assert "bytes" in field_help(fields["kv_cache_memory"])
    assert "auto" in field_help(fields["dtype"])


@pytest.mark.parametrize("text, value", [("1024", 1024), ("512MiB", 512 << 20), ("2GB", 2 * 10**9),
                                         ("1.5GiB", 3 << 29), ("1e9", 10**9), ("4k", 4000)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "MiB", "12XB", "-3", "one"])
def test_parse_bytes_rejects(text):
    with pytest.raises(typer.BadParameter):
        parse_bytes(text)
