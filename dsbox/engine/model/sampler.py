"""Token sampling: greedy, temperature, top-k, top-p, with per-request seeds.

A seeded request draws its noise from a generator seeded by (seed, output index), so its
tokens do not depend on what it is batched with, on preemption, or on which worker runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsbox.engine.core.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The log-probability of a sampled token under the model, and the ``top`` most likely
    tokens (id, logprob), best first (as many as the request asked for)."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits: torch.Tensor, params: tuple[SamplingParams, ...],
                   tokens: list[int]) -> list[TokenLogprob | None] | None:
    """Logprobs of the sampled ``tokens`` (raw model distribution, before temperature and
    filters) for the rows whose request asked for them; None when no row did."""
    rows = [i for i, p in enumerate(params) if p.logprobs is not None]
    if not rows:
        return None
    lp = torch.log_softmax(logits[rows].float(), dim=-1)
    picked = lp[torch.arange(len(rows)), torch.tensor([tokens[i] for i in rows])].tolist()
    k = max(params[i].logprobs for i in rows)
    top_v, top_i = lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long())
    out: list[TokenLogprob | None] = [None] * len(params)
    for j, i in enumerate(rows):
        n = params[i].logprobs
        out[i] = TokenLogprob(picked[j], tuple(zip(top_i[j, :n].tolist(),
                                                   top_v[j, :n].tolist(), strict=True)))
    return out


def _filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor,
                        top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) logits outside each row's top-k and nucleus top-p sets."""
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    ranks = torch.arange(vocab, device=logits.device).expand_as(sorted_logits)
    k = torch.where(top_k > 0, top_k, vocab).unsqueeze(1)
    drop = ranks >= k
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    cum_before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
    drop |= cum_before >= top_p.unsqueeze(1)
    drop[:, 0] = False  # always keep the best token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, sorted_idx, sorted_logits)


def sample(logits: torch.Tensor, params: tuple[SamplingParams, ...],
           output_index: tuple[int, ...], generator: torch.Generator | None = None
           ) -> list[int]:
    """One token per row of ``logits`` [batch, vocab]."""
    logits = logits.float()
    greedy = [p.greedy for p in params]
    result = logits.argmax(dim=-1)
    rows = [i for i, g in enumerate(greedy) if not g]
    if rows:
        sub = logits if len(rows) == len(params) else logits[rows]
        dev = logits.device
        chosen = [params[i] for i in rows]
        # one host-to-device copy for every row's settings, and the filter decision taken
        # on the host (no device sync)
        knobs = torch.tensor([[p.temperature, p.top_k, p.top_p] for p in chosen],
                             dtype=torch.float32).to(dev, non_blocking=True)
        sub = sub / knobs[:, 0:1]
        if any(p.top_k > 0 or p.top_p < 1 for p in chosen):
            sub = _filter_top_k_top_p(sub, knobs[:, 1].long(), knobs[:, 2])
        probs = sub.softmax(dim=-1)
        noise = torch.empty_like(probs)
        for j, i in enumerate(rows):
            seed = params[i].seed
            if seed is None:
                noise[j].exponential_(generator=generator)
            else:
                g = torch.Generator(device=dev).manual_seed(
                    (seed * 1_000_003 + output_index[i]) % (2**63))
                noise[j].exponential_(generator=g)
        # Gumbel-max in exponential form: argmax p / E with E ~ Exp(1) samples from p
        picked = (probs / noise).argmax(dim=-1)
        result[rows] = picked
    return result.tolist()
