"""Stats snapshots: the live state of an engine and of each of its instances.

``EngineClient.stats()`` returns an :class:`EngineStats`, taken by the engine's loop at one
moment (nothing in it changes afterwards). The dashboard, the server's ``/metrics`` and the
bench read these and compute nothing of their own but differences between two snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dsbox.metrics.records import FINISH_REASONS


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """One instance (one copy of the weights on tp x pp devices) at one moment."""

    instance_id: int
    role: str                      # prefill | decode | colocated
    tp: int
    pp: int
    devices: tuple[str, ...]       # "cuda:0", "cpu", ... one per rank
    healthy: bool
    num_waiting: int               # queued for prefill (prefill, colocated; decode: recompute)
    num_running: int               # decode batch (decode, colocated); prefill: in a step
    num_prefilled: int             # prefill: KV held until a decode instance pulls it
    num_pending_pull: int          # decode: offered or being pulled
    kv_blocks_used: int
    kv_blocks_total: int
    kv_bytes_in: int = 0           # KV bytes pulled into this instance (decode)
    kv_bytes_out: int = 0          # KV bytes pulled out of this instance (prefill)
    kv_transfer_rate: float = 0.0  # bytes/s moved in or out over the last few seconds
    num_steps: int = 0             # steps run (a PP micro-batch counts once)
    error: str | None = None
    pids: tuple[int, ...] = ()     # worker process ids, one per rank (empty: in-process)

    @property
    def kv_usage(self) -> float:
        """Share of the KV pool in use, 0..1."""
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0

    @property
    def queue_depth(self) -> int:
        """Requests waiting at this instance (prefill queue, or decode pulls outstanding)."""
        return self.num_waiting + self.num_pending_pull

    @property
    def label(self) -> str:
        text = f"{self.role}{self.instance_id} tp={self.tp}"
        return text + (f" pp={self.pp}" if self.pp > 1 else "")


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The whole engine at one moment. Counters run from the engine's start."""

    time: float                                  # time.monotonic() of the snapshot
    uptime_s: float
    instances: tuple[InstanceStats, ...]
    num_requests: int = 0                        # requests received
    finished: Mapping[str, int] = field(default_factory=dict)  # by finish reason
    prompt_tokens: int = 0                       # prompt tokens prefilled (first time)
    generation_tokens: int = 0                   # tokens generated
    num_unfinished: int = 0                      # requests in the engine now
    aborted_at: Mapping[str, int] = field(default_factory=dict)  # aborts by the stage hit:
    # queued, prefill (in a step), prefilled (KV waiting to be pulled), transfer, decode

    def num_finished(self, reason: str | None = None) -> int:
        if reason is None:
            return sum(self.finished.values())
        return self.finished.get(reason, 0)

    @property
    def healthy(self) -> bool:
        return all(i.healthy for i in self.instances)

    @property
    def num_running(self) -> int:
        return sum(i.num_running for i in self.instances if i.role != "prefill")

    @property
    def num_waiting(self) -> int:
        return sum(i.num_waiting for i in self.instances)

    @property
    def kv_blocks_used(self) -> int:
        return sum(i.kv_blocks_used for i in self.instances)

    @property
    def kv_blocks_total(self) -> int:
        return sum(i.kv_blocks_total for i in self.instances)

    @property
    def kv_usage(self) -> float:
        total = self.kv_blocks_total
        return self.kv_blocks_used / total if total else 0.0

    @property
    def kv_bytes_moved(self) -> int:
        return sum(i.kv_bytes_in for i in self.instances)

    def finished_by_reason(self) -> dict[str, int]:
        """Every finish reason, zero where none finished so."""
        return {r: self.finished.get(r, 0) for r in FINISH_REASONS}


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the engine serves, and what is wrong where it does not."""

    ok: bool
    instances: tuple[tuple[int, str, bool, str | None], ...]  # (id, role, healthy, error)
    error: str | None = None                                   # the engine loop's own
