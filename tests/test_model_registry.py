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


@pytest.mark.parametrize("placement, needle", [
    ("prefill:tp=1", "needs a decode instance"),
    ("colocated:tq=2", "bad parameter"),
    (3, "must be placement text"),
])
def test_bad_placement_entry_names_the_entry(placement, needle):
    entry = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 8,
             "placement": placement}
    with pytest.raises(ValueError, match=r"models.toml \[x\]") as info:
        _registry_entry("x", entry)
    assert needle in str(info.value)


TINY = 'hidden_size = 64\nnum_layers = 2\nnum_heads = 4\nffn_dim = 128\nbundled = true\n'


def test_a_registry_placement_is_what_auto_chooses(tmp_path, monkeypatch):
    """``--placement auto`` takes the placement of the model's entry in a user's registry
    (run, serve and bench all choose through ``choose_placement``), and says so; a model
    without one still gets the default rule."""
    from dsbox.bench.placements import bench_placements
    from dsbox.cli.placement_choice import choose_placement
    from dsbox.devices import Devices

    mine = tmp_path / "mine.toml"
    mine.write_text(f'[placed]\n{TINY}placement = "prefill:tp=1 * 2 ; decode:tp=1"\n'
                    f'[unplaced]\n{TINY}')
    monkeypatch.setenv("DSBOX_MODELS_TOML", str(mine))
    cpu2 = Devices("cpu", 2, "cpu", 1 << 30)
    placed = get_model_spec("placed")
    assert placed.default_placement == "prefill:tp=1*2;decode:tp=1"
    got = choose_placement("auto", placed, cpu2)
    assert got.placement == "prefill:tp=1*2;decode:tp=1"
    assert "model registry" in got.rule and "placed" in got.rule
    (bench,) = bench_placements(["auto"], placed, cpu2)
    assert bench.text == "prefill:tp=1*2;decode:tp=1" and "model registry" in bench.rule
    assert choose_placement("colocated:tp=1", placed, cpu2).rule == "given with --placement"
    other = choose_placement("auto", get_model_spec("unplaced"), cpu2)
    assert other.placement == "prefill:tp=1;decode:tp=1" and "default rule" in other.rule


def test_dsbox_run_uses_the_registry_placement(tmp_path):
    """End to end: ``dsbox --models-file FILE run`` serves with the entry's placement and
    prints that the registry chose it; a malformed placement is one error line naming the
    file and the entry."""
    mine = tmp_path / "mine.toml"
    mine.write_text(f'[placed]\n{TINY}placement = "colocated:tp=1"\n')
    env = dict(os.environ, COLUMNS="300", NO_COLOR="1", OMP_NUM_THREADS="1")
    env.pop("DSBOX_MODELS_TOML", None)
    cli = [sys.executable, "-m", "dsbox", "--models-file", str(mine)]
    proc = subprocess.run([*cli, "run", "placed", "--no-tui", "-p", "Hi", "--max-tokens", "2",
                           "--device", "cpu", "--dtype", "float32",
                           "--kv-cache-memory", "4MiB"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # without the registry's choice the default rule would split 2 cores into P + D
    assert "placement colocated:tp=1," in proc.stdout, proc.stdout
    assert "placement chosen by: the model registry" in proc.stdout, proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[placed]\n{TINY}placement = "decode:tp=1"\n')
    proc = subprocess.run([sys.executable, "-m", "dsbox", "--models-file", str(bad), "run",
                           "placed", "--no-tui"], env=env, capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    assert str(bad) in lines[0] and "[placed]" in lines[0] and "prefill" in lines[0]
