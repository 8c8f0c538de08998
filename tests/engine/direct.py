"""Drive an in-process engine's model runner directly (model-level tests).

The engine's own scheduler belongs to its loop thread; these tests schedule with a second
scheduler over the same (idle) KV pool and run steps on the device worker's runner.
"""

from __future__ import annotations

from dsbox import LLM
from dsbox.engine.core.block_manager import BlockManager
from dsbox.engine.core.scheduler import Scheduler, SchedulerConfig


def direct(llm: LLM):
    """(runner, scheduler) of an idle in-process ``llm``."""
    worker = llm.client.local_worker()
    num_blocks = worker.pool.shape[2]
    return worker.runner, Scheduler(SchedulerConfig(), BlockManager(num_blocks,
                                                                    llm.config.block_size))


def kv_blocks_used(llm: LLM) -> int:
    return llm.stats().kv_blocks_used
