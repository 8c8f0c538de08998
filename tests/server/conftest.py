"""A real ``dsbox serve`` in a subprocess on a free loopback port, shared by the server
tests (one per session: start-up is the slow part), and helpers to read its metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_cli import DSBOX

TWO_INSTANCES = "prefill:tp=1;decode:tp=1"
PER_BLOCK = 2 * 3 * 16 * 64 * 4  # bytes of one 16-token KV block of the tiny model, fp32
# a chat template unlike the default, so the tests see --chat-template at work
CUSTOM_TEMPLATE = """
user = "### Question:\\n{content}\\n"
assistant = "### Answer:\\n{content}</s>\\n"
generation_prompt = "### Answer:\\n"
stop = ["\\n###"]
"""


@dataclass
class Server:
    proc: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # the API key, if it has one

    def output(self) -> str:
        return "\n".join(self.lines)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name and labels: ``name{a="x",b="y"}`` -> value
        (labels sorted, model_name left out), parsed by prometheus_client's parser."""
        res = httpx.get(self.url + "/metrics", headers=self.headers, timeout=30)
        res.raise_for_status()
        text = res.text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())
                                  if k != "model_name")
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def start_server(args: list[str], timeout: float = 240, api_key: str | None = None) -> Server:
    """``dsbox serve ARGS --port 0`` (with ``$DSBOX_API_KEY`` set to ``api_key`` if one is
    given); returns once it says where it listens."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
    env.pop("DSBOX_API_KEY", None)
    if api_key is not None:
        env["DSBOX_API_KEY"] = api_key
    proc = subprocess.Popen([*DSBOX, "serve", *args, "--port", "0"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Server(proc, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            server.lines.append(line.rstrip("\n"))
            m = re.search(r"serving \S+ on (http://\S+)", line)
            if m:
                server.url = m.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or not server.url:
        proc.kill()
        raise AssertionError(f"dsbox serve did not start:\n{server.output()}")
    return server


def wait_until(pred, timeout: float = 30, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


def idle(server: Server) -> bool:
    """No request anywhere: none running, waiting or holding a KV block."""
    m = server.metrics()
    used = sum(v for k, v in m.items() if k.startswith("dsbox:instance_kv_blocks_used"))
    return (used == 0 and m["dsbox:num_requests_running"] == 0
            and m["dsbox:num_requests_waiting"] == 0 and m["dsbox:server_num_waiting"] == 0)


@pytest.fixture(scope="session")
def template_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "qa.toml"
    path.write_text(CUSTOM_TEMPLATE)
    return path


@pytest.fixture(scope="session")
def server(preln_ckpt, template_file):
    """The tiny model, disaggregated (one prefill and one decode worker), on the CPU."""
    srv = start_server([str(preln_ckpt), "--placement", TWO_INSTANCES, "--device", "cpu",
                        "--dtype", "float32", "--kv-cache-memory", str(400 * PER_BLOCK),
                        "--max-model-len", "128", "--chat-template", str(template_file),
                        "--max-waiting", "1000"])
    yield srv
    code = srv.stop()
    assert code == 0, srv.output()
    assert "Traceback" not in srv.output(), srv.output()


@pytest.fixture(scope="session")
def model_name(preln_ckpt) -> str:
    return preln_ckpt.name  # a checkpoint directory is served under its folder's name
