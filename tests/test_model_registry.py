"""The model registry: shape entries, bundled `path` entries (shapes from the shipped
config.json), clear errors for malformed entries, the file at the repository root that a
non-editable install ships, and a user's own registry."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

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
                           description=spec.description, path=spec.path,
                           default_slo=spec.default_slo)


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


ROOT = Path(__file__).resolve().parents[1]


def test_the_registry_lives_at_the_root_and_a_wheel_ships_it(tmp_path):
    """``models.toml`` is at the repository root (what users edit); a built wheel carries
    it inside the package, so a non-editable install finds it."""
    root_text = (ROOT / "models.toml").read_text()
    assert "[dsbox-chat]" in root_text
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("dsbox-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("dsbox/models.toml").decode() == root_text
        assert "dsbox/data/models/dsbox-chat/model.safetensors" in z.namelist()


def test_a_users_registry_replaces_the_shipped_one(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('[my-model]\nhidden_size = 64\nnum_layers = 2\nnum_heads = 4\n'
                    'ffn_dim = 128\nbundled = true\nslo = "chatbot-66b"\n')
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    env.pop("DSBOX_MODELS_TOML", None)
    cli = [sys.executable, "-m", "dsbox"]
    by_option = subprocess.run([*cli, "--models-file", str(mine), "models"], env=env,
                               capture_output=True, text=True, timeout=120)
    by_env = subprocess.run([*cli, "models"], env=dict(env, DSBOX_MODELS_TOML=str(mine)),
                            capture_output=True, text=True, timeout=120)
    for proc in (by_option, by_env):
        assert proc.returncode == 0, proc.stderr
        assert "my-model" in proc.stdout and "dsbox-chat" not in proc.stdout
    missing = subprocess.run([*cli, "--models-file", str(tmp_path / "no.toml"), "models"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error:")
    bad = tmp_path / "bad.toml"
    bad.write_text("[x\n")
    proc = subprocess.run([*cli, "models"], env=dict(env, DSBOX_MODELS_TOML=str(bad)),
                          capture_output=True, text=True, timeout=120)
    assert "not valid TOML" in proc.stderr and "Traceback" not in proc.stderr
