"""RequestTracker: the caller-facing side of requests, shared by the in-process engine and
the controller: prompt validation, incremental detokenization, stop strings, the model's
length limit, and the RequestOutput snapshots handed back.

Streamed text is exact: the ``new_text`` of a request's outputs concatenate to its final
``text``. While a request with stop strings runs, its last ``len(longest stop) - 1``
characters are held back (they may be the start of a stop string that the next tokens
complete, and then must not have been sent); they go out once they cannot be, or at the
end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dsbox.config import ModelSpec
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sequence import FinishReason, Sequence
from dsbox.engine.core.stop_checker import find_stop
from dsbox.engine.model.tokenizer import IncrementalDetokenizer, Tokenizer

# finish(seq_id, reason) ends a sequence in whichever scheduler holds it
FinishFn = Callable[[int, FinishReason], None]


@dataclass(slots=True)
class TrackedRequest:
    seq: Sequence
    prompt: str | None
    detok: IncrementalDetokenizer
    text: str = ""
    num_sent: int = 0          # characters of text already handed out as new_text
    error: str | None = None


class RequestTracker:
    def __init__(self, tokenizer: Tokenizer, spec: ModelSpec, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.max_model_len = max_model_len
        self.requests: dict[int, TrackedRequest] = {}

    def encode_prompt(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        """Validate a prompt and return (text or None, token ids). Raises ValueError."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            ids = self.tokenizer.encode(prompt)
            text = prompt
        else:
            if isinstance(prompt, bytes) or not hasattr(prompt, "__iter__"):
                raise ValueError(f"a prompt is text or a list of token ids, got {prompt!r}")
            ids = list(prompt)
            bad_type = [t for t in ids if isinstance(t, bool) or not isinstance(t, int)]
            if bad_type:
                raise ValueError(f"token ids must be integers, got {bad_type[0]!r}")
            text = None
            if not ids:
                raise ValueError("prompt has no tokens")
            bad = [t for t in ids if not 0 <= t < self.spec.vocab_size]
            if bad:
                raise ValueError(f"token id(s) {bad[:5]} outside the vocabulary "
                                 f"[0, {self.spec.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(ids)} tokens; the model's limit is "
                             f"{self.max_model_len} tokens including at least one generated")
        return text, ids

    def encode_prompts(self, prompts) -> list[tuple[str | None, list[int]]]:
        """``encode_prompt`` for a batch: every prompt is validated before the caller queues
        any, and an error names the prompt's index."""
        encoded = []
        for i, p in enumerate(prompts):
            try:
                encoded.append(self.encode_prompt(p))
            except ValueError as exc:
                raise ValueError(f"prompt {i}: {exc}") from None
        return encoded

    def add(self, seq: Sequence, prompt: str | None) -> None:
        self.requests[seq.seq_id] = TrackedRequest(
            seq, prompt, IncrementalDetokenizer(self.tokenizer, list(seq.prompt_token_ids)))

    def __contains__(self, rid: int) -> bool:
        return rid in self.requests

    def __len__(self) -> int:
        return len(self.requests)

    def advance(self, rid: int, now: float, finish: FinishFn) -> RequestOutput | None:
        """Take in the sequence's new tokens: detokenize, apply stop strings and the length
        limit (ending the sequence through ``finish``), and return its output. A finished
        request is forgotten."""
        req = self.requests.get(rid)
        if req is None:
            return None
        seq = req.seq
        new_ids = seq.output_token_ids[len(req.detok.ids) - seq.num_prompt_tokens:]
        delta = req.detok.add(new_ids)
        if seq.is_finished:
            delta += req.detok.flush()
        req.text += delta
        hit = find_stop(req.text, len(delta), seq.params.stop)
        if hit is not None:
            i, stop = hit
            end = i + len(stop) if seq.params.include_stop_str_in_output else i
            req.text = req.text[:end]
            if not seq.is_finished:
                finish(rid, FinishReason.STOP)
            seq.finish_reason = FinishReason.STOP
        elif not seq.is_finished and seq.num_tokens >= self.max_model_len:
            finish(rid, FinishReason.LENGTH)
        return self.output(rid)

    def fail(self, rid: int, message: str) -> RequestOutput | None:
        req = self.requests.get(rid)
        if req is None:
            return None
        req.error = message
        return self.output(rid)

    def output(self, rid: int) -> RequestOutput:
        """Snapshot of a request, with the text not handed out before as ``new_text``;
        forgets it once finished."""
        req = self.requests[rid]
        seq = req.seq
        if seq.is_finished:
            del self.requests[rid]
            upto = len(req.text)
        else:  # hold back what may be the start of a stop string
            hold = max((len(s) for s in seq.params.stop), default=1) - 1
            upto = max(req.num_sent, len(req.text) - hold)
        new_text = req.text[req.num_sent:upto]
        req.num_sent = upto
        return RequestOutput(
            request_id=rid,
            prompt=req.prompt,
            prompt_token_ids=list(seq.prompt_token_ids),
            token_ids=list(seq.output_token_ids),
            text=req.text,
            finished=seq.is_finished,
            finish_reason=seq.finish_reason.value if seq.finish_reason else None,
            lifecycle=seq.lifecycle,
            error=req.error,
            new_text=new_text,
            logprobs=None if seq.logprobs is None else list(seq.logprobs),
        )
