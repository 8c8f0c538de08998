"""EngineConfig: everything that shapes one engine instance (model, dtype, KV pool, batching).

The CLI builds its options from these fields; ``LLM(...)`` takes them as keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dsbox.config.model_spec import DEFAULT_MODEL

DTYPES = ("float32", "float16", "bfloat16")
EXECUTORS = ("auto", "inprocess", "workers")


@dataclass(slots=True)
class EngineConfig:
    model: str = DEFAULT_MODEL
    dtype: str = "auto"               # auto: float16 on CUDA, float32 on CPU
    device: str = "auto"              # auto: cuda if available, else cpu
    dummy_weights: bool = False
    seed: int = 0
    block_size: int = 16
    kv_cache_memory: int | None = None    # bytes for the KV pool (per device)
    kv_cache_memory_decode: int | None = None  # decode instances' budget, if different
    kv_cache_fraction: float = 0.9        # else this share of free GPU memory after weights
    max_num_batched_tokens: int = 2048    # prefill token budget per step
    max_num_seqs: int = 256
    max_model_len: int | None = None      # default: the model's max positions
    attention_backend: str | None = None  # "torch" | "triton"; default by device
    placement: str | None = None          # placement text form; None = colocated:tp=1
    executor: str = "auto"                # auto (in-process for colocated:tp=1), inprocess, workers
    share_devices: bool = False           # CUDA: instances share GPUs (ids modulo the GPU count)
    num_threads: int | None = None        # torch threads/worker ($OMP_NUM_THREADS, cores/workers)

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {DTYPES}, got {self.dtype!r}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.block_size not in (8, 16, 32):
            raise ValueError(f"block_size must be 8, 16 or 32, got {self.block_size}")
        for name in ("kv_cache_memory", "kv_cache_memory_decode"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive number of bytes")
        if not 0 < self.kv_cache_fraction <= 1:
            raise ValueError("kv_cache_fraction must be in (0, 1]")
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError("max_num_batched_tokens and max_num_seqs must be >= 1")
        if self.placement is not None:
            from dsbox.config.placement import Placement

            Placement.parse(self.placement)  # ValueError with the reason when malformed
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len must be >= 2 (a prompt token and a generated one)")
        if self.attention_backend not in (None, "torch", "triton"):
            raise ValueError(f"attention_backend must be torch or triton, "
                             f"got {self.attention_backend!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
