"""The model registry: shape entries, bundled `path` entries (shapes from the shipped
config.json), and clear errors for malformed entries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dsbox.config import DEFAULT_MODEL, ModelSpec, get_model_spec, load_registry
from dsbox.config.model_spec import _registry_entry, package_path


def test_default_model_is_a_bundled_checkpoint():
    registry = load_registry()
    assert next(iter(registry)) == DEFAULT_MODEL == "dsbox-chat"
    spec = registry[DEFAULT_MODEL]
    assert spec.bundled and spec.path == "data/models/dsbox-chat"
    assert spec.bundled_dir == package_path("data/models/dsbox-chat")
    shapes = ModelSpec.from_hf_dir(spec.bundled_dir)
    assert spec == replace(shapes, name=DEFAULT_MODEL, bundled=True,
                           description=spec.description, path=spec.path)


def test_opt_tiny_stays_random_and_bundled():
    spec = get_model_spec("opt-tiny")
    assert spec.bundled and spec.path is None and spec.bundled_dir is None
    assert (spec.hidden_size, spec.num_layers, spec.vocab_size) == (64, 2, 50272)


@pytest.mark.parametrize("entry, needle", [
    ({"path": "data/models/dsbox-chat", "hidden_size": 64}, "remove hidden_size"),
    ({"path": "data/models/dsbox-chat", "bundled": False}, "is bundled"),
    ({"hidden_size": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 8, "colour": "red"},
     "unknown key(s) colour"),
])
def test_bad_entries(entry, needle):
    with pytest.raises(ValueError, match=r"models.toml \[x\]") as info:
        _registry_entry("x", entry)
    assert needle in str(info.value)


def test_path_entry_without_checkpoint():
    with pytest.raises(FileNotFoundError, match="no config.json"):
        _registry_entry("x", {"path": "data/models/no-such-model"})
