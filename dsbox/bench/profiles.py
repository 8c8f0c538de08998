"""The latency profile the simulator runs on.

``--profile`` names one (a file, a directory of ``<model>.json``, a built-in such as
``a100-80g``, or a GPU of the planner's table for a derived profile: see
:mod:`dsbox.placement.profile_source`). Without it the bench uses this machine's profile of
the model, ``profiles/<device>/<model>.json`` (where ``--placement auto`` looks too), and
measures one there first (``dsbox profile``'s quick grid, one torch thread) when there is
none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dsbox.placement.profile import LatencyProfile
from dsbox.placement.profile_source import load_profile

PROFILE_DIR = Path("profiles")


def machine_device_slug() -> str:
    """This machine's device kind as profiles are filed (``cpu`` without a GPU)."""
    from dsbox.devices import discover_devices

    return discover_devices().profile_key


def default_profile_path(model: str) -> Path:
    return PROFILE_DIR / machine_device_slug() / f"{model}.json"


def measure_profile(engine_kwargs: dict, model: str, path: Path,
                    progress: Callable[[int, int, str], None] | None = None,
                    grid=None) -> LatencyProfile:
    """Measure ``model`` here (default: ``dsbox profile``'s quick grid; one torch thread)
    and save it to ``path``."""
    from dsbox.config import EngineConfig
    from dsbox.placement.profiler import ProfileGrid, ProfilingTarget, profile_engine

    fields = {k: v for k, v in engine_kwargs.items()
              if k not in ("model", "placement", "executor", "share_devices", "dummy_weights")}
    target = ProfilingTarget(EngineConfig(model=model, dummy_weights=True, **fields))
    run = profile_engine(target, grid or ProfileGrid.quick(), device=machine_device_slug(),
                         progress=progress, threads=1)
    run.profile.save(path)
    return run.profile


def find_profile(name: str | None, model: str) -> tuple[LatencyProfile | None, str]:
    """(profile, where) for ``--profile`` ``name``; without a name, this machine's default
    file when it exists, else (None, the path where one should be measured)."""
    if name is not None:
        return load_profile(name, model), name
    path = default_profile_path(model)
    if path.is_file():
        return load_profile(path, model), str(path)
    return None, str(path)
