"""``dsbox run`` in real terminals: a tmux smoke test (dashboard up, a chat message answered
on screen, quit, nothing left), ``make run`` at 80 x 24 on the bundled default model, and
SIGINT, SIGTERM, SIGHUP and a crash of the app under a pseudo-terminal, each of which must
stop every worker process and leave nothing in /dev/shm that the run had mapped or open."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dsbox.chat_template import ChatTemplate
from dsbox.engine.core.sampling_params import SamplingParams
from tests.test_cli import DSBOX
from tests.tui.conftest import PLACEMENT
from tests.tui.processes import MARK, descendants, left_in_shm, marked, shm_files, wait_gone

STARTUP_TIMEOUT = 300.0  # the box is shared: starting two workers can take a while
MAX_TOKENS = 16


def run_args(ckpt) -> list[str]:
    return ["run", str(ckpt), "--placement", PLACEMENT, "--kv-cache-memory", "8MiB",
            "--max-model-len", "512", "--dtype", "float32", "--temperature", "0",
            "--max-tokens", str(MAX_TOKENS), "--num-threads", "1"]


def terminal_env(mark: str = "") -> dict:
    env = dict(os.environ, TERM="xterm-256color", OMP_NUM_THREADS="1", **{MARK: mark})
    for key in ("COLUMNS", "LINES", "NO_COLOR", "TEXTUAL"):
        env.pop(key, None)
    return env


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --- tmux ------------------------------------------------------------------------------------
class TmuxPane:
    """A command in a detached tmux session of its own (socket ``name``) of a given size;
    its environment carries the mark ``name``, and the pane prints ``EXITED <rc>`` after."""

    def __init__(self, name: str, args: list[str], cols: int, rows: int) -> None:
        self.mark = name
        self.tmux = ["tmux", "-L", name]
        command = shlex.join(["env", f"{MARK}={name}", *args]) + "; echo EXITED $?; sleep 120"
        subprocess.run([*self.tmux, "new-session", "-d", "-x", str(cols), "-y", str(rows),
                        command], env=terminal_env(), check=True)
        self.shell = int(subprocess.run([*self.tmux, "display", "-p", "#{pane_pid}"],
                                        capture_output=True, text=True).stdout)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p"], capture_output=True,
                              text=True).stdout

    def send(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", *keys], check=True)

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_smoke(preln_ckpt, engine, tmp_path):
    """What a user does: run it, see the dashboard, chat, read the reply, quit."""
    term = TmuxPane(f"dsbox-test-{os.getpid()}", [*DSBOX, *run_args(preln_ckpt)], 160, 50)
    pane, shell, mark = term.screen, term.shell, term.mark
    try:
        _wait(lambda: "Instances" in pane() and "Load generator" in pane(), STARTUP_TIMEOUT,
              "the dashboard")
        tree = descendants(shell)
        shm = shm_files(tree)
        term.send("Hello", "Enter")

        def answered() -> str | None:
            screen = pane()
            return screen if re.search(r"TTFT [\d.]+ ms · TPOT", screen) else None

        screen = _wait(answered, 120, "the reply")
        # the same greedy reply, from another engine on the same weights
        prompt = ChatTemplate().render([{"role": "user", "content": "Hello"}])
        want = engine.generate([prompt], SamplingParams(
            max_tokens=MAX_TOKENS, temperature=0.0, top_p=0.95,
            stop=list(ChatTemplate().stop)))[0]
        words = [w for w in want.text.split() if w.isalpha()][:3]
        assert words, want.text
        for word in words:
            assert word in screen, (word, want.text, screen)
        assert f"{len(want.token_ids)} tokens · {want.finish_reason}" in screen
        term.send("C-q")
        _wait(lambda: "EXITED 0" in pane(), 60, "dsbox to exit")
        assert not wait_gone(tree), "processes left behind"
        assert not marked(mark), "orphaned processes"
        assert not left_in_shm(shm)
    finally:
        term.kill()


REPO = Path(__file__).resolve().parents[2]


def _make_run_ready() -> bool:
    """``make run`` would start at once: make is there and .venv is installed and current."""
    if shutil.which("make") is None or not (REPO / ".venv" / ".installed").is_file():
        return False
    return subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO,
                          capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.skipif(not _make_run_ready(), reason="make run needs an installed, current .venv")
def test_make_run_opens_the_app_on_the_default_model_at_80x24():
    """The README's first command: the app on dsbox-chat (no model given, auto placement),
    on the smallest terminal it supports, answering a chat message in words."""
    term = TmuxPane(f"dsbox-make-run-{os.getpid()}", ["make", "-s", "-C", str(REPO), "run"],
                    80, 24)
    pane, shell, mark = term.screen, term.shell, term.mark
    try:
        _wait(lambda: "dsbox-chat" in pane() and "Message the model" in pane()
              and "KV" in pane(), STARTUP_TIMEOUT, "the app on dsbox-chat")
        tree = descendants(shell)
        term.send("What is the weather like today?", "Enter")

        def answered() -> str | None:
            screen = pane()
            return screen if re.search(r"TTFT [\d.]+ ms · TPOT [\d.]+ ms", screen) else None

        screen = _wait(answered, 120, "the reply")
        reply = screen.split("What is the weather like today?")[-1]
        assert len(re.findall(r"\b[a-z]{3,}\b", reply)) >= 5, screen  # words, not bytes
        term.send("C-q")
        _wait(lambda: "EXITED 0" in pane(), 60, "make run to exit")
        assert not wait_gone(tree), "processes left behind"
        assert not marked(mark), "orphaned processes"
    finally:
        term.kill()


# --- signals and a crash under a pseudo-terminal ---------------------------------------------
class PtyRun:
    """A command on a pseudo-terminal of a given size; its output is collected."""

    def __init__(self, args: list[str], mark: str, cols: int = 160, rows: int = 50) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.mark = mark
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                                     env=terminal_env(mark), start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


CRASHING_APP = textwrap.dedent("""
    import sys

    from dsbox.tui import app as tui_app


    class CrashingApp(tui_app.DsboxApp):
        def start_polling(self):
            super().start_polling()
            self.set_timer(5.0, self.boom)

        def boom(self):
            raise RuntimeError("boom: the app crashed")


    tui_app.DsboxApp = CrashingApp

    if __name__ == "__main__":
        from dsbox.cli import main

        sys.argv = ["dsbox", *sys.argv[1:]]
        main()
""")


def test_signals_and_a_crash_stop_every_worker(preln_ckpt, tmp_path):
    """SIGINT, SIGTERM, SIGHUP (the terminal closed) and a crash inside the app, each in its
    own ``dsbox run`` (run side by side), and SIGTERM while the workers start: exit code, no
    process (orphans included) and no /dev/shm file left."""
    script = tmp_path / "crashing_run.py"
    script.write_text(CRASHING_APP)
    args = run_args(preln_ckpt)
    tag = f"dsbox-test-{os.getpid()}"
    cases = {sig.name: (sig, PtyRun([*DSBOX, *args], f"{tag}-{sig.name}"))
             for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    cases["crash"] = (None, PtyRun([sys.executable, str(script), *args], f"{tag}-crash"))
    cases["start-up"] = (signal.SIGTERM, PtyRun([*DSBOX, *args], f"{tag}-start-up"))
    try:
        trees, shm = {}, {}
        waiting = dict(cases)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while waiting:  # as each is ready: note its processes, send its signal
            assert time.monotonic() < deadline, f"not ready: {list(waiting)}"
            for name, (sig, run) in list(waiting.items()):
                ready = "loading weights" if name == "start-up" else "Instances"
                if ready in run.text():
                    trees[name] = descendants(run.proc.pid)
                    shm[name] = shm_files(trees[name] | {run.proc.pid})
                    if sig is not None:
                        os.kill(run.proc.pid, sig)
                    del waiting[name]
                else:
                    assert run.proc.poll() is None, (name, run.text()[-3000:])
            time.sleep(0.05)
        for name, (sig, run) in cases.items():
            code = run.proc.wait(timeout=60)
            expected = 128 + sig if sig is not None else 1
            assert code == expected, (name, code, run.text()[-3000:])
            if sig is None:
                assert "boom: the app crashed" in run.text()
            if name != "start-up":
                assert len(trees[name]) >= 3, (name, trees[name])  # 2 workers, forkserver
                assert shm[name], name  # it had files there (its queues' semaphores)
            assert not wait_gone(trees[name]), f"{name}: processes left behind"
            deadline = time.monotonic() + 20
            while marked(run.mark) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not marked(run.mark), f"{name}: orphaned processes"
            assert not left_in_shm(shm[name]), name
    finally:
        for _, run in cases.values():
            run.close()
