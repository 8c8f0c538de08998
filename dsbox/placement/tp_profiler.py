"""Step times at TP > 1, measured through the runtime's own worker processes.

A TP group of ``tp`` worker processes (the engine's :class:`ProcessLauncher`, one process
per device or CPU core, ``torch.distributed`` between them: NCCL on GPUs, gloo on the CPU)
is started for ``colocated:tp=<tp>`` with dummy weights, and the profiler's synthetic steps
are sent to it as the engine sends steps (:class:`StepDelta` of new sequences, blocks
reserved from a block manager over the group's pool, forgotten after). Each worker times
its step and the reporting one returns that time in its ``StepDone`` (``model_ms``), so what
is measured is the model's step on the group, not the trip to and from the workers (that
is the runtime overhead, measured separately: :mod:`dsbox.placement.overhead`).
"""

from __future__ import annotations

import queue
import time
from dataclasses import replace

STEP_TIMEOUT_S = 120.0


class WorkerGroupTimer:
    """Times synthetic steps on one ``colocated:tp=<tp>`` instance of worker processes;
    the same interface as :class:`~dsbox.placement.profiler.EngineStepTimer`."""

    def __init__(self, config, tp: int, startup_timeout: float = 300.0) -> None:
        from dsbox.engine.core.block_manager import BlockManager
        from dsbox.engine.runtime.kv_budgets import kv_budgets
        from dsbox.engine.runtime.launch import ProcessLauncher
        from dsbox.engine.runtime.setup import resolve_setup

        if tp < 2:
            raise ValueError(f"a worker group profiles tp >= 2, got {tp}")
        config = replace(config, placement=f"colocated:tp={tp}", executor="workers")
        setup = resolve_setup(config)
        plans = setup.plans()
        self.launcher = ProcessLauncher(plans, startup_timeout)
        try:
            budgets = kv_budgets(plans, self.launcher.loaded, config.kv_cache_fraction)
            num_blocks = self.launcher.measure(budgets)[0].num_blocks
            if num_blocks < 1:
                raise ValueError("the KV budget holds no block; raise kv_cache_memory")
            self.launcher.allocate({0: num_blocks})
        except BaseException:
            self.launcher.kill()
            raise
        self.executor = self.launcher.executors[0]
        self.spec = setup.spec
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.max_model_len = min(setup.max_model_len, num_blocks * config.block_size)
        self._next_id = 10**9
        self._step_id = 0

    @property
    def max_tokens(self) -> int:
        bm = self.block_manager
        return bm.num_blocks * bm.block_size

    def run(self, phase: str, batch: int, length: int) -> float:
        """Seconds of one step, as the worker group timed it."""
        from dsbox.engine.core.sampling_params import SamplingParams
        from dsbox.engine.runtime.messages import StepDone, WorkerFailed
        from dsbox.engine.runtime.step_protocol import NewRequest, StepDelta

        bm = self.block_manager
        ids = tuple(range(self._next_id, self._next_id + batch))
        self._next_id += batch
        self._step_id += 1
        vocab = self.spec.vocab_size
        params = SamplingParams(max_tokens=1, temperature=0.0)
        try:
            tables = [tuple(bm.reserve(i, length)) for i in ids]
            prefill = phase == "prefill"
            new = length if prefill else 1
            delta = StepDelta(
                is_prefill=prefill, seq_ids=ids,
                token_ids=tuple((7 * k + 3) % vocab for k in range(batch * new)),
                starts=tuple(0 if prefill else length - 1 for _ in ids),
                context_lens=tuple(length for _ in ids), output_index=tuple(0 for _ in ids),
                new=tuple(NewRequest(i, params, t) for i, t in zip(ids, tables, strict=True)))
            self.executor.run_step(self._step_id, delta)
            deadline = time.monotonic() + STEP_TIMEOUT_S
            while True:
                try:
                    msg = self.launcher.results.get(timeout=max(0.1, deadline
                                                                - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"worker group: no answer to a step after "
                                       f"{STEP_TIMEOUT_S:.0f} s") from None
                if isinstance(msg, WorkerFailed):
                    raise RuntimeError(f"worker rank {msg.rank} failed: {msg.message}")
                if isinstance(msg, StepDone) and msg.step_id == self._step_id:
                    return msg.model_ms / 1e3
        finally:
            self.executor.forget(ids)
            for i in ids:
                bm.free(i)

    def close(self) -> None:
        self.executor.stop()
        self.executor.join(30.0)
        self.launcher.kill()

    def __enter__(self) -> WorkerGroupTimer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
