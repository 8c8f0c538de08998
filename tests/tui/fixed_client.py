"""FixedClient: an ``EngineClient`` that serves fixed, deterministic data, for snapshot
rendering ONLY (every behavioural test of the app drives a real engine).

Its data are the engine's own types: ``EngineStats``/``InstanceStats`` snapshots whose clock
advances one second per ``stats()`` call, ``RequestRecord``s with full lifecycles (seeded
random latencies, chat and load tags), and chat replies as ``RequestOutput``s in two chunks
with fixed stamps."""

from __future__ import annotations

import numpy as np

from dsbox.client.base import EngineClient, EngineInfo
from dsbox.config import get_model_spec
from dsbox.config.placement import Placement
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.model.tokenizer import bundled_tokenizer
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.stats import EngineStats, Health, InstanceStats
from dsbox.tui.resources import CpuSample, GpuSample, ResourceSample

START = 1000.0  # monotonic seconds at the engine's start
REPLY = ("Paris is the capital", " of France.")


def lifecycle(arrival: float, ttft: float, tpot: float, n: int, instances=(0, 1)) -> Lifecycle:
    first = arrival + ttft
    times = [first + i * tpot for i in range(n)]
    lc = Lifecycle(arrival, prefill_queued=arrival, prefill_start=arrival + ttft * 0.3,
                   prefill_end=first, decode_queued=first, transfer_start=first,
                   transfer_end=first + 0.001, decode_start=first + 0.002, token_times=times,
                   finish=times[-1], prefill_instance=instances[0],
                   decode_instance=instances[1])
    return lc


class FixedClient(EngineClient):
    def __init__(self, placement: str = "prefill:tp=1;decode:tp=1", device: str = "cpu",
                 seed: int = 0) -> None:
        self.spec = get_model_spec("opt-tiny")
        self.tokenizer = bundled_tokenizer()
        self.placement = Placement.parse(placement)
        self.max_model_len = 2048
        self.closed = False
        self._devices = device
        self._rng = np.random.default_rng(seed)
        self._uptime = 0.0
        self._log: list[RequestRecord] = []
        self._ids = 0

    # --- the data --------------------------------------------------------------------------
    def _instances(self) -> tuple[InstanceStats, ...]:
        out = []
        k = int(self._uptime)
        for i, inst in enumerate(self.placement.instances):
            devs = tuple(f"cuda:{d}" for d in inst.devices) if self._devices == "cuda" \
                else ("cpu",) * (inst.tp * inst.pp)
            out.append(InstanceStats(
                instance_id=i, role=inst.role, tp=inst.tp, pp=inst.pp, devices=devs,
                healthy=True, num_waiting=2 if inst.role != "decode" else 0,
                num_running=7 if inst.role != "prefill" else 1,
                num_prefilled=1 if inst.role == "prefill" else 0,
                num_pending_pull=1 if inst.role == "decode" else 0,
                kv_blocks_used=37 + i, kv_blocks_total=128, kv_bytes_in=0,
                kv_bytes_out=0, kv_transfer_rate=(3 << 20) if inst.role != "colocated" else 0,
                num_steps=50 * k + i))
        return tuple(out)

    def _finish_requests(self, t0: float, t1: float) -> None:
        """Requests finishing in (t0, t1]: about three a second, every fourth a chat."""
        for _ in range(3):
            self._ids += 1
            ttft = float(self._rng.gamma(4.0, 0.02 + 0.002 * (t1 - START)))
            tpot = float(self._rng.gamma(6.0, 0.012))
            n = int(self._rng.integers(4, 30))
            finish = t0 + float(self._rng.uniform(0, 1)) * (t1 - t0)
            arrival = finish - ttft - (n - 1) * tpot
            tag = "chat" if self._ids % 4 == 0 else "load"
            reason = "length" if self._ids % 9 else "abort"
            self._log.append(RequestRecord(self._ids, 40 + self._ids % 50, n, reason,
                                           lifecycle(arrival, ttft, tpot, n), tag, 4096))

    def stats(self) -> EngineStats:
        self._uptime += 1.0
        now = START + self._uptime
        self._finish_requests(now - 1.0, now)
        done = len(self._log)
        return EngineStats(time=now, uptime_s=self._uptime, instances=self._instances(),
                           num_requests=done + 5, finished={"length": done},
                           prompt_tokens=60 * done, generation_tokens=17 * done,
                           num_unfinished=5)

    def info(self) -> EngineInfo:
        return EngineInfo(self.spec.name, "bundled (random weights, seed 0)", "float32",
                          self._devices, self.placement.format())

    def finished_since(self, cursor: int = 0):
        return self._log[cursor:], len(self._log)

    def steps_since(self, cursor: int = 0):
        return [], cursor  # its requests take no steps

    def pulls_since(self, cursor: int = 0):
        return [], cursor  # nor move any KV

    def health(self) -> Health:
        return Health(True, tuple((i.instance_id, i.role, True, None)
                                  for i in self._instances()))

    # --- requests: a chat reply in two chunks ------------------------------------------------
    def submit(self, prompt, params, on_output, *, arrival=None, tag=""):
        self._ids += 1
        rid = self._ids
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        lc = lifecycle(0.0, 0.0123, 0.0071, 6)
        text = ""
        for i, chunk in enumerate(REPLY):
            text += chunk
            last = i == len(REPLY) - 1
            on_output(RequestOutput(rid, prompt if isinstance(prompt, str) else None, ids,
                                    list(range(3 * (i + 1))), text, last,
                                    "stop" if last else None, lc, new_text=chunk))
        return rid

    def submit_batch(self, prompts, params, on_output, *, tag=""):
        return [self.submit(p, sp, on_output, tag=tag) for p, sp in zip(prompts, params,
                                                                           strict=True)]

    def abort(self, request_id: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def cpu_sample() -> ResourceSample:
    return ResourceSample((), CpuSample((1.52, 1.21, 0.98), (0.45, 0.62), 2))


def gpu_sample() -> ResourceSample:
    return ResourceSample(tuple(GpuSample(i, "NVIDIA H100 80GB HBM3", 0.35 + 0.4 * i,
                                          (20 + 30 * i) << 30, 80 << 30) for i in range(2)),
                          CpuSample((3.0, 2.5, 2.0), (0.2,) * 8, 8))
