"""Small factories for simulator tests: fits, instances, setups, traces."""

from __future__ import annotations

from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import StepFit
from dsbox.placement.sim_types import SimInstance, SimSetup, SimTrace
from dsbox.placement.workload import sample_requests, synthetic_lengths

FIT = StepFit((20.0, 0.1, 1e-5), (15.0, 0.0006, 0.04), (7.0, 0.0006, 0.15), decode_threshold=95)
KV_BYTES = 800 * 1024  # per token (opt-13b fp16)


def make_instance(role: str, *, tp: int = 1, pp: int = 1, num_blocks: int = 4000,
                  block_size: int = 16, budget: int = 1024, max_num_seqs: int = 256,
                  fit: StepFit = FIT) -> SimInstance:
    return SimInstance(role, InstanceLatency(tp, pp, fit), num_blocks, block_size, budget,
                       max_num_seqs)


def make_setup(num_prefill: int = 1, num_decode: int = 1, bandwidth: float = 300e9,
               **kwargs) -> SimSetup:
    prefill = [make_instance("prefill", **kwargs.get("prefill", {})) for _ in range(num_prefill)]
    decode = [make_instance("decode", **kwargs.get("decode", {})) for _ in range(num_decode)]
    table = tuple(tuple(bandwidth for _ in decode) for _ in prefill) if prefill and decode else ()
    return SimSetup(tuple(prefill + decode), KV_BYTES, table)


def make_colocated(num: int = 1, **kwargs) -> SimSetup:
    return SimSetup(tuple(make_instance("colocated", **kwargs) for _ in range(num)), KV_BYTES)


def make_trace(n: int = 200, rate: float = 4.0, seed: int = 0, mean_prompt: float = 400,
               mean_output: float = 60) -> SimTrace:
    lengths = synthetic_lengths(mean_prompt, mean_output, n=1000, seed=seed, max_total=1500)
    return sample_requests(lengths, n, seed=seed).at_rate(rate)
