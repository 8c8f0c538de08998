"""What an engine is made of, resolved from an ``EngineConfig`` before anything starts.

One place turns the config into the device, dtype, model source and shapes, tokenizer,
length limit and placement (devices assigned), and decides whether the instances run in
this process or in worker processes. Every check that needs no worker happens here, so
bad input fails fast, before any process exists; what is merely doubtful becomes a warning
(logged on the ``dsbox`` logger).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import torch

from dsbox.config import EngineConfig, ModelSpec
from dsbox.config.placement import InstanceSpec, Placement, map_to_visible_devices
from dsbox.engine.model.source import ModelSource, resolve_model
from dsbox.engine.model.tokenizer import Tokenizer, bundled_tokenizer, load_tokenizer
from dsbox.engine.runtime.device_names import device_names, uses_one_device
from dsbox.engine.runtime.device_worker import WorkerSpec
from dsbox.engine.runtime.launch import InstancePlan
from dsbox.kernels import INTERPRETER_REQUESTED

logger = logging.getLogger("dsbox")

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return TORCH_DTYPES[name]


def load_source_tokenizer(source: ModelSource) -> Tokenizer:
    """The checkpoint's tokenizer, or the bundled GPT-2 BPE (with a warning for a real
    checkpoint that ships none)."""
    if source.tokenizer_dir is not None:
        return load_tokenizer(source.tokenizer_dir)
    if source.weights_dir is not None:
        logger.warning("%s has no tokenizer files; using the bundled GPT-2 BPE, whose ids may "
                       "differ from the model's own (copy its tokenizer.json into the folder)",
                       source.weights_dir)
    return bundled_tokenizer()


def free_port() -> int:
    """A free TCP port on loopback (an instance's torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(slots=True)
class EngineSetup:
    config: EngineConfig
    device: torch.device
    dtype: torch.dtype
    source: ModelSource
    tokenizer: Tokenizer
    max_model_len: int
    placement: Placement                     # devices assigned
    instances: list[InstanceSpec]            # one per running instance, in index order
    in_process: bool
    num_threads: int                         # torch threads per worker (or in-process)
    names: list[tuple[str, ...]]             # per instance, each rank's device ("cuda:1")
    warnings: list[str] = field(default_factory=list)

    @property
    def spec(self) -> ModelSpec:
        return self.source.spec

    @property
    def num_workers(self) -> int:
        return sum(i.tp * i.pp for i in self.instances)

    @property
    def run_device(self) -> torch.device:
        """The device the engine's own thread works on: the first rank's of instance 0
        (the one an in-process engine runs on)."""
        return torch.device(self.names[0][0])

    def plans(self) -> list[InstancePlan]:
        """One InstancePlan (with a WorkerSpec per rank) per instance, in index order."""
        cfg = self.config
        weights = None if cfg.dummy_weights else self.source.weights_dir
        names = self.names
        kv_memory = {"prefill": cfg.kv_cache_memory, "colocated": cfg.kv_cache_memory,
                     "decode": cfg.kv_cache_memory_decode or cfg.kv_cache_memory}
        plans = []
        for index, (inst, devices) in enumerate(zip(self.instances, names, strict=True)):
            port = 0 if inst.tp * inst.pp == 1 else free_port()
            workers = tuple(WorkerSpec(
                instance_id=index, role=inst.role, rank=r, tp=inst.tp, pp=inst.pp, device=d,
                spec=self.spec, weights_dir=weights, dtype=self.dtype, seed=cfg.seed,
                block_size=cfg.block_size, kv_cache_memory=kv_memory[inst.role],
                kv_cache_fraction=cfg.kv_cache_fraction,
                attention_backend=cfg.attention_backend, master_port=port,
                num_threads=self.num_threads,
                max_num_seqs=cfg.max_num_seqs)
                for r, d in enumerate(devices))
            plans.append(InstancePlan(index, inst.role, inst.tp, inst.pp, workers))
        return plans


def _warn(setup_warnings: list[str], message: str) -> None:
    setup_warnings.append(message)
    logger.warning("%s", message)


def resolve_setup(config: EngineConfig) -> EngineSetup:
    """Resolve ``config``; raises ValueError / ModelNotFoundError on bad input."""
    from dsbox.engine.runtime.parallel import check_divisible

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    source = resolve_model(config.model, config.dummy_weights)
    spec = source.spec
    tokenizer = load_source_tokenizer(source)
    max_len = config.max_model_len or spec.max_position_embeddings
    if max_len > spec.max_position_embeddings:
        raise ValueError(f"max_model_len {max_len} exceeds {spec.name}'s "
                         f"{spec.max_position_embeddings} positions")
    if config.attention_backend == "triton" and device.type != "cuda" \
            and not INTERPRETER_REQUESTED:
        raise ValueError("attention_backend triton needs a CUDA GPU (on the CPU the kernels "
                         "run only under Triton's slow interpreter: start with "
                         "TRITON_INTERPRET=1 to ask for it, as the tests do); use "
                         "attention_backend torch")
    placement = Placement.parse(config.placement or "colocated:tp=1").assigned()
    instances = placement.expanded()
    for inst in instances:
        check_divisible(spec, inst.tp, inst.pp)
    warnings: list[str] = []
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda":
        placement.validate_for(spec, torch.cuda.get_device_properties(
                                   device.index or 0).total_memory,
                               num_devices=None if config.share_devices else count,
                               dtype=str(dtype).removeprefix("torch."),
                               min_kv_tokens=config.block_size, memory_utilization=0.95)
        instances = map_to_visible_devices(instances, count, share=config.share_devices)
        if device.index is not None and not uses_one_device(instances, config.share_devices):
            _warn(warnings, f"device {device} names one GPU, but placement "
                            f"{placement.format(False)} runs on several: its device ids are "
                            "the visible GPUs' (choose them with @ids, e.g. "
                            "prefill:tp=1@1;decode:tp=1@2)")
    names = device_names(device.type, device.index, instances, count,
                         share=config.share_devices)
    in_process = _decide_in_process(config.executor, instances)
    workers = sum(i.tp * i.pp for i in instances)
    cpus = usable_cpus()
    if device.type == "cpu" and not in_process and workers > cpus:
        _warn(warnings, f"placement {placement.format(False)} runs {workers} CPU workers on "
                        f"{cpus} cores: they will take turns and run slowly")
    threads = config.num_threads or default_threads(cpus, 1 if in_process else workers)
    return EngineSetup(config, device, dtype, source, tokenizer, max_len, placement,
                       instances, in_process, threads, names, warnings)


def default_threads(cpus: int, workers: int) -> int:
    """Torch threads per worker: ``$OMP_NUM_THREADS`` when set, else the cores shared out
    (more threads than cores make every OpenMP barrier wait on a descheduled thread)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, cpus // workers)


def _decide_in_process(executor: str, instances: list[InstanceSpec]) -> bool:
    one_device = all(i.tp * i.pp == 1 for i in instances)
    if executor == "inprocess":
        if not one_device:
            raise ValueError("executor=inprocess runs instances of one device each (tp=pp=1); "
                             "use executor=workers for tensor or pipeline parallelism")
        return True
    if executor == "workers":
        return False
    return len(instances) == 1 and instances[0].role == "colocated" and one_device
