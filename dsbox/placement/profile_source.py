"""Find a model's latency profile: a file, a directory, a built-in one, or a derived one.

:func:`load_profile` takes, in order:

1. a profile file (``dsbox profile`` writes them);
2. a directory of ``<model>.json`` files;
3. a built-in measured profile (``a100-80g``: DistServe's fits of OPT-13B and OPT-66B);
4. a GPU of the table (:mod:`dsbox.placement.gpus`): a profile *derived* by the analytic
   model (:mod:`dsbox.placement.analytic`) for any registry model, also when a built-in
   profile of that GPU lacks the model (``a100-80g`` for ``opt-175b``).

Anything else is one error that lists the profiles there are.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from dsbox.config.model_spec import get_model_spec
from dsbox.placement.gpus import find_gpu, gpu_names
from dsbox.placement.profile import BUILTIN_DIR, BUILTIN_PACKAGE, LatencyProfile


def model_key(model: str) -> str:
    return model.strip().lower().removeprefix("facebook/")


def builtin_profiles() -> dict[str, list[str]]:
    """Built-in (measured) profile names -> the models each covers."""
    root = resources.files(BUILTIN_PACKAGE).joinpath(*BUILTIN_DIR)
    out: dict[str, list[str]] = {}
    if not root.is_dir():
        return out
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            models = sorted(f.name[:-5] for f in entry.iterdir() if f.name.endswith(".json"))
            if models:
                out[entry.name] = models
    return out


def available_profiles(directory: Path | None = None) -> str:
    """One line naming every profile there is (and what ``directory`` holds, if given)."""
    parts = []
    if directory is not None:
        files = sorted(f.stem for f in directory.glob("*.json"))
        parts.append(f"{directory} holds {', '.join(files) or 'no profiles'}")
    measured = "; ".join(f"{name} ({', '.join(models)})"
                         for name, models in builtin_profiles().items())
    parts.append(f"measured built-in: {measured or 'none'}")
    parts.append(f"derived for any registry model: {', '.join(gpu_names())}")
    parts.append("or a file / directory written by `dsbox profile`")
    return "; ".join(parts)


def load_profile(name_or_path: str | Path, model: str) -> LatencyProfile:
    """The profile of ``model`` named by ``name_or_path`` (see the module docstring)."""
    key = model_key(model)
    path = Path(name_or_path)
    if path.is_file():
        profile = LatencyProfile.load(path)
    elif path.is_dir():
        file = path / f"{key}.json"
        if not file.is_file():
            raise ValueError(f"profile directory {path} has no {key}.json; profiles: "
                             f"{available_profiles(path)}")
        profile = LatencyProfile.load(file)
    else:
        name = str(name_or_path).strip().lower()
        builtins = builtin_profiles()
        if key in builtins.get(name, ()):
            text = resources.files(BUILTIN_PACKAGE).joinpath(*BUILTIN_DIR, name,
                                                              f"{key}.json").read_text()
            profile = LatencyProfile.from_dict(json.loads(text),
                                               source=f"built-in {name}/{key}")
        elif (gpu := find_gpu(name)) is not None:
            from dsbox.placement.analytic import derive_profile  # numpy work, on demand

            return derive_profile(get_model_spec(key), gpu)
        elif name in builtins:
            raise ValueError(f"built-in profile {name!r} has no {key} (it covers "
                             f"{', '.join(builtins[name])}); profiles: {available_profiles()}")
        else:
            raise ValueError(f"unknown profile {str(name_or_path)!r}: not a file or "
                             f"directory; profiles: {available_profiles()}")
    if model_key(profile.model) != key:
        raise ValueError(f"profile {name_or_path} is for {profile.model}, not {model}")
    return profile
