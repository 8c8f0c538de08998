"""Measure the dsbox engine's step times and write a latency profile (``dsbox profile``).

A device worker is built in this process (:class:`ProfilingTarget`: dummy weights of the
model's real shapes, its KV pool, the engine's model runner) and driven directly with
synthetic steps: a prefill batch of given prompt lengths, or a decode step of ``B``
sequences with ``C`` tokens of context each (blocks reserved from a block manager over its
pool, freed after). The grid is swept
``warmup + repeats`` times and each shape keeps the median of its timed runs (the
machine's typical speed, robust to a burst of noise in one of them).

Every ``held_out``-th point of the grid is kept out of the fit and used to report how well
the fit predicts steps it has not seen (median relative error). TP 1 is measured in this
process; each TP > 1 on a TP group of the runtime's worker processes (:func:`profile_tp`,
:mod:`dsbox.placement.tp_profiler`), its fit added with :func:`add_tp_fit` (its points
and held-out error in ``provenance["tp"]``). `dsbox profile` then measures the runtime's
own per-step overhead (:mod:`dsbox.placement.overhead`).
"""

from __future__ import annotations

import datetime
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dsbox.placement.fitting import (
    DecodePoint,
    PrefillPoint,
    fit_step,
    median_error,
    relative_errors,
    token_budget,
)
from dsbox.placement.profile import LatencyProfile, StepFit


@dataclass(frozen=True, slots=True)
class ProfileGrid:
    """The shapes measured."""

    prefill_batches: tuple[int, ...] = (1, 2, 4)
    prefill_lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256)
    decode_contexts: tuple[int, ...] = (64, 256, 1024)
    repeats: int = 3
    warmup: int = 1
    held_out: int = 4

    def __post_init__(self) -> None:
        for name in ("prefill_batches", "prefill_lengths", "decode_batches", "decode_contexts"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name} must be non-empty positive integers")
        if self.repeats < 1 or self.warmup < 0 or self.held_out < 2:
            raise ValueError("repeats >= 1, warmup >= 0 and held_out >= 2 required")

    @classmethod
    def quick(cls) -> ProfileGrid:
        """A small grid (CPU runs and tests): prompts long enough that per-token work, not
        per-call overhead, sets the prefill time; more repeats against timing noise."""
        return cls(prefill_batches=(1, 2), prefill_lengths=(64, 128, 256, 384, 512, 768, 1024),
                   decode_batches=(1, 2, 4, 8, 16, 32, 64), decode_contexts=(32, 128, 512),
                   repeats=7, warmup=1, held_out=4)

    def shapes(self, max_tokens: int, max_len: int) -> Iterator[tuple[str, int, int]]:
        """``(phase, batch, length)`` of every point whose KV fits ``max_tokens`` and whose
        sequences fit ``max_len`` positions."""
        for b in self.prefill_batches:
            for n in self.prefill_lengths:
                if b * n <= max_tokens and n <= max_len:
                    yield "prefill", b, n
        for b in self.decode_batches:
            for c in self.decode_contexts:
                if b * c <= max_tokens and c <= max_len:
                    yield "decode", b, c


class ProfilingTarget:
    """One device worker built in this process from an ``EngineConfig`` (dummy weights):
    the model runner, a block manager over its pool, and what the profile records."""

    def __init__(self, config) -> None:
        from collections import deque

        from dsbox.engine.core.block_manager import BlockManager
        from dsbox.engine.runtime.kv_budgets import kv_budgets
        from dsbox.engine.runtime.launch import LocalLauncher
        from dsbox.engine.runtime.setup import resolve_setup

        setup = resolve_setup(config)
        plans = setup.plans()[:1]
        launcher = LocalLauncher(plans, deque())
        budgets = kv_budgets(plans, launcher.loaded, config.kv_cache_fraction)
        num_blocks = launcher.measure(budgets)[0].num_blocks
        if num_blocks < 1:
            raise ValueError("the KV budget holds no block; raise kv_cache_memory")
        launcher.allocate({0: num_blocks})
        worker = launcher.workers[0]
        self.runner = worker.runner
        self.device = worker.device
        self.dtype = setup.dtype
        self.spec = setup.spec
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.max_model_len = min(setup.max_model_len, num_blocks * config.block_size)


class EngineStepTimer:
    """Times synthetic steps on a :class:`ProfilingTarget`'s model runner."""

    def __init__(self, engine: ProfilingTarget) -> None:
        import torch

        self.engine = engine
        self.torch = torch
        self.block_size = engine.block_manager.block_size
        self._next_id = 10**9

    @property
    def max_tokens(self) -> int:
        bm = self.engine.block_manager
        return bm.num_blocks * bm.block_size

    def _sync(self) -> None:
        if self.engine.device.type == "cuda":
            self.torch.cuda.synchronize(self.engine.device)

    def run(self, phase: str, batch: int, length: int) -> float:
        """Seconds of one step."""
        from dsbox.engine.core.sampling_params import SamplingParams
        from dsbox.engine.core.step_batch import StepBatch

        bm = self.engine.block_manager
        ids = list(range(self._next_id, self._next_id + batch))
        self._next_id += batch
        vocab = self.engine.spec.vocab_size
        try:
            tables = tuple(tuple(bm.reserve(i, length)) for i in ids)
            prefill = phase == "prefill"
            new = length if prefill else 1
            tokens = tuple((7 * k + 3) % vocab for k in range(batch * new))
            step = StepBatch(
                is_prefill=prefill, seq_ids=tuple(ids), token_ids=tokens,
                starts=tuple(0 if prefill else length - 1 for _ in ids),
                context_lens=tuple(length for _ in ids), block_tables=tables,
                params=tuple(SamplingParams(max_tokens=1, temperature=0.0) for _ in ids),
                output_index=tuple(0 for _ in ids))
            self._sync()
            start = time.perf_counter()
            self.engine.runner.execute(step)
            self._sync()
            return time.perf_counter() - start
        finally:
            for i in ids:
                bm.free(i)


@dataclass(slots=True)
class ProfileRun:
    """A measured profile and how well its fit predicts the held-out points."""

    profile: LatencyProfile
    train: list
    held_out: list
    held_out_error: float
    prefill_error: float
    decode_error: float


def measure(timer, grid: ProfileGrid, max_len: int,
            progress: Callable[[int, int, str], None] | None = None) -> list:
    """Time every grid point; ``progress(done, total, label)`` after each run. The grid is
    swept ``warmup + repeats`` times (a burst of noise spoils one run of many shapes, not
    every run of one shape), each sweep in its own shuffled order (seeded: in a fixed
    order a shape always follows the same one and inherits what it leaves behind), and
    each shape keeps the median of its timed runs: the machine's typical speed, which is
    what a served step meets. (On a shared CPU box the same step's fastest of 25 runs was
    about 30% below their median, and a profile of the fastest runs had the simulator run
    every step that much faster than the engine did.)"""
    shapes = list(grid.shapes(timer.max_tokens, max_len))
    if not shapes:
        raise ValueError("no grid point fits the KV pool; raise kv_cache_memory")
    runs = grid.warmup + grid.repeats
    total = len(shapes) * runs
    done = 0
    timed: list[list[float]] = [[] for _ in shapes]
    order = list(range(len(shapes)))
    shuffle = random.Random(0).shuffle
    for r in range(runs):
        shuffle(order)
        for i in order:
            phase, batch, length = shapes[i]
            seconds = timer.run(phase, batch, length)
            if r >= grid.warmup:
                timed[i].append(seconds)
            done += 1
            if progress is not None:
                progress(done, total, f"{phase} batch {batch} x {length}")
    points = []
    for (phase, batch, length), runs in zip(shapes, timed, strict=True):
        seconds = statistics.median(runs)
        if phase == "prefill":
            points.append(PrefillPoint((length,) * batch, seconds * 1000))
        else:
            points.append(DecodePoint(batch, batch * length, seconds * 1000))
    return points


def split_held_out(points: list, every: int) -> tuple[list, list]:
    """Every ``every``-th point of each phase (from the second) is held out."""
    train, held = [], []
    for kind in (PrefillPoint, DecodePoint):
        same = [p for p in points if isinstance(p, kind)]
        for i, p in enumerate(same):
            (held if i % every == 1 else train).append(p)
    return train, held


def build_profile(points: list, *, model: str, device: str, device_name: str, dtype: str,
                  device_memory_bytes: int, held_out_every: int, notes: dict | None = None
                  ) -> ProfileRun:
    """Fit the training points and wrap the result as a ``dsbox`` profile (TP 1)."""
    fit, train, held = _fit_split(points, held_out_every)
    budget = token_budget([p for p in points if isinstance(p, PrefillPoint)])
    errors = _fit_errors(fit, points, train, held)
    provenance = {
        "source": "measured with `dsbox profile` (dsbox engine, dummy weights)",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device_name": device_name,
        **errors,
        "max_train_relative_error": max(relative_errors(fit, train)),
        **(notes or {}),
    }
    profile = LatencyProfile(
        model=model, device=device, device_name=device_name, dtype=dtype,
        device_memory_bytes=device_memory_bytes, fits={"dsbox": {1: fit}},
        default_engine="dsbox", prefill_token_budget={1: budget}, provenance=provenance,
        measurements=[p.to_dict() for p in points])
    return ProfileRun(profile, train, held, errors["held_out_median_relative_error"],
                      errors["prefill_held_out_error"], errors["decode_held_out_error"])


def device_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def describe_device(engine) -> tuple[str, int]:
    """Human name and total memory (bytes) of the engine's device."""
    import torch

    from dsbox.engine.model.kv_pool import available_memory

    if engine.device.type == "cuda":
        props = torch.cuda.get_device_properties(engine.device)
        return props.name, int(props.total_memory)
    return "cpu", int(available_memory(engine.device))


def profile_engine(engine, grid: ProfileGrid, *, device: str | None = None,
                   progress: Callable[[int, int, str], None] | None = None,
                   threads: int | None = None) -> ProfileRun:
    """Measure ``engine`` over ``grid`` and fit a profile. ``threads``: torch CPU threads
    while measuring (one thread times steadily on a busy machine)."""
    import torch

    timer = EngineStepTimer(engine)
    name, memory = describe_device(engine)
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        points = measure(timer, grid, engine.max_model_len, progress)
    finally:
        torch.set_num_threads(before)

    dtype = str(engine.dtype).removeprefix("torch.")
    notes = {"torch": torch.__version__, "torch_threads": threads or before, "grid": {
        "prefill_batches": list(grid.prefill_batches),
        "prefill_lengths": list(grid.prefill_lengths),
        "decode_batches": list(grid.decode_batches),
        "decode_contexts": list(grid.decode_contexts),
        "repeats": grid.repeats, "warmup": grid.warmup}}
    return build_profile(points, model=engine.spec.name, device=device or device_slug(name),
                         device_name=name, dtype=dtype, device_memory_bytes=memory,
                         held_out_every=grid.held_out, notes=notes)


def _fit_split(points: list, held_out_every: int) -> tuple[StepFit, list, list]:
    """The fit of ``points`` without the held-out ones, the training and held-out points."""
    train, held = split_held_out(points, held_out_every)
    fit = fit_step([p for p in train if isinstance(p, PrefillPoint)],
                   [p for p in train if isinstance(p, DecodePoint)])
    return fit, train, held


def _fit_errors(fit: StepFit, points: list, train: list, held: list) -> dict:
    """How well ``fit`` predicts the held-out points (all, prefill, decode) and its own."""
    return {
        "num_points": len(points), "held_out_points": len(held),
        "held_out_median_relative_error": median_error(fit, held),
        "prefill_held_out_error": median_error(
            fit, [p for p in held if isinstance(p, PrefillPoint)]),
        "decode_held_out_error": median_error(
            fit, [p for p in held if isinstance(p, DecodePoint)]),
        "train_median_relative_error": median_error(fit, train)}


def fit_points(points: list, held_out_every: int) -> tuple[StepFit, dict]:
    """The fit of ``points`` (held-out ones excluded) and how well it predicts those."""
    fit, train, held = _fit_split(points, held_out_every)
    return fit, {**_fit_errors(fit, points, train, held),
                 "measurements": [p.to_dict() for p in points]}


def profile_tp(config, tp: int, grid: ProfileGrid,
               progress: Callable[[int, int, str], None] | None = None) -> tuple[StepFit, dict]:
    """Measure ``grid`` on a TP group of ``tp`` worker processes (the engine's own workers,
    :mod:`dsbox.placement.tp_profiler`) and fit it; ``(fit, what it was fitted on)``."""
    from dsbox.placement.tp_profiler import WorkerGroupTimer

    with WorkerGroupTimer(config, tp) as timer:
        points = measure(timer, grid, timer.max_model_len, progress)
    return fit_points(points, grid.held_out)


def add_tp_fit(profile: LatencyProfile, tp: int, fit: StepFit, record: dict) -> None:
    """Put the fit of TP ``tp`` (and its L_m and record) into ``profile``."""
    from dsbox.placement.fitting import point_from_dict

    profile.fits[profile.default_engine][tp] = fit
    points = [point_from_dict(m) for m in record["measurements"]]
    profile.prefill_token_budget[tp] = token_budget(
        [p for p in points if isinstance(p, PrefillPoint)])
    profile.provenance.setdefault("tp", {})[str(tp)] = {
        "source": "measured with `dsbox profile` through the worker processes", **record}
