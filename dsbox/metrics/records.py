"""RequestRecord: what is kept of one finished request, for reports and dashboards.

The engine keeps a bounded log of these (``EngineClient.finished_since``); the simulator
makes them from a trace and its lifecycles; the bench stores them in its JSON. The report
(:mod:`dsbox.metrics.report`) reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.metrics.lifecycle import Lifecycle

FINISH_REASONS = ("stop", "length", "abort", "error")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request: token counts, how it ended, its lifecycle stamps."""

    request_id: int
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: str
    lifecycle: Lifecycle
    tag: str = ""              # who sent it ("chat", "load", "bench", ...)
    kv_bytes: int = 0          # KV bytes moved from prefill to decode for it
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished normally (stop or length), not aborted or failed."""
        return self.finish_reason in ("stop", "length")

    def to_dict(self) -> dict:
        lc = self.lifecycle
        return {
            "request_id": self.request_id,
            "tag": self.tag,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_output_tokens": self.num_output_tokens,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "kv_bytes": self.kv_bytes,
            "arrival": lc.arrival,
            "prefill_queued": lc.prefill_queued,
            "prefill_start": lc.prefill_start,
            "prefill_end": lc.prefill_end,
            "decode_queued": lc.decode_queued,
            "transfer_start": lc.transfer_start,
            "transfer_end": lc.transfer_end,
            "decode_start": lc.decode_start,
            "finish": lc.finish,
            "token_times": list(lc.token_times),
            "num_preemptions": lc.num_preemptions,
            "prefill_instance": lc.prefill_instance,
            "decode_instance": lc.decode_instance,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RequestRecord:
        lc = Lifecycle(
            arrival=d["arrival"], prefill_queued=d.get("prefill_queued"),
            prefill_start=d.get("prefill_start"), prefill_end=d.get("prefill_end"),
            transfer_start=d.get("transfer_start"), transfer_end=d.get("transfer_end"),
            decode_queued=d.get("decode_queued"), decode_start=d.get("decode_start"),
            token_times=list(d.get("token_times", ())), finish=d.get("finish"),
            num_preemptions=d.get("num_preemptions", 0),
            prefill_instance=d.get("prefill_instance"),
            decode_instance=d.get("decode_instance"))
        return cls(d["request_id"], d["num_prompt_tokens"], d["num_output_tokens"],
                   d["finish_reason"], lc, d.get("tag", ""), d.get("kv_bytes", 0),
                   d.get("error"))
