"""Interpreted vs compiled kernels: a process's mode is fixed once, CUDA never interprets.

Each case runs in its own interpreter (the mode is decided when the kernel modules are
imported), with CUDA hidden so it behaves the same on a GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full_env.update(CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_interpreted_kernel_refuses_cuda_tensors():
    res = _python("""
        import torch
        from dsbox.kernels._common import launchable
        from dsbox.kernels.decode_attention import _decode_split_kernel
        try:
            launchable(_decode_split_kernel, torch.device("cuda", 0))
        except RuntimeError as exc:
            print("refused:", exc)
    """, TRITON_INTERPRET="1")
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "interpreter" in res.stdout
    assert "TRITON_INTERPRET" in res.stdout  # says what to unset


def test_ensure_mode_cuda_scrubs_the_variable_for_the_process_and_its_children():
    res = _python("""
        import os, subprocess, sys
        import dsbox.kernels as k
        assert os.environ["TRITON_INTERPRET"] == "1"
        assert k.load_kernels("cuda") == "compiled"
        assert "TRITON_INTERPRET" not in os.environ
        assert k.kernel_mode() == "compiled"
        child = subprocess.run([sys.executable, "-c",
                                "import os; print(os.environ.get('TRITON_INTERPRET'))"],
                               capture_output=True, text=True, check=True)
        print("child sees", child.stdout.strip())
    """, TRITON_INTERPRET="1")
    assert res.returncode == 0, res.stderr
    assert "child sees None" in res.stdout


def test_ensure_mode_cuda_after_interpreted_import_raises():
    res = _python("""
        import dsbox.kernels as k
        import dsbox.kernels.kv_write
        assert k.kernel_mode() == "interpreted"
        try:
            k.ensure_mode("cuda:0")
        except RuntimeError as exc:
            print("raised:", exc)
    """, TRITON_INTERPRET="1")
    assert res.returncode == 0, res.stderr
    assert "raised:" in res.stdout and "already imported interpreted" in res.stdout


def test_cpu_mode_turns_the_interpreter_on_without_cuda():
    res = _python("""
        import os
        import dsbox.kernels as k
        os.environ.pop("TRITON_INTERPRET", None)
        assert k.load_kernels("cpu") == "interpreted"
        assert os.environ["TRITON_INTERPRET"] == "1"
        with k.without_interpreter_env():
            assert "TRITON_INTERPRET" not in os.environ
        assert os.environ["TRITON_INTERPRET"] == "1"
        print("ok")
    """)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout
