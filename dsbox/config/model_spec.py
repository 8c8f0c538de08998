"""ModelSpec: the shapes of one OPT-family model, read from models.toml or an HF config.json.

The registry (``dsbox/models.toml``) lists every OPT size and the bundled models. Sizes
derived here (parameter count, weight bytes, KV bytes per token) are what `dsbox models`,
the KV-pool sizing and the placement search all use.

A registry entry either gives the shapes itself (``hidden_size``, ``num_layers``, ...) or,
for a checkpoint shipped inside the package, a ``path`` relative to the ``dsbox`` package
(``path = "data/models/dsbox-chat"``): such an entry is bundled, and its shapes come from the
``config.json`` there (the registry never repeats them).

An entry may give a default ``placement`` (placement text, e.g. ``"colocated:tp=1"``): then
``--placement auto`` uses it for that model instead of planning. It is parsed when the
registry loads, so a malformed one is an error naming the entry.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from dsbox.config.slo import SLO_PRESETS

MODELS_TOML_ENV = "DSBOX_MODELS_TOML"
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shapes of an OPT decoder. Validated on construction."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    vocab_size: int = 50272
    max_position_embeddings: int = 2048
    word_embed_proj_dim: int | None = None
    do_layer_norm_before: bool = True
    hf_repo: str | None = None
    bundled: bool = False
    description: str = ""
    default_slo: str | None = None  # SLO preset for planning (models.toml ``slo``)
    default_placement: str | None = None  # ``--placement auto`` uses it (``placement``)
    path: str | None = None      # bundled checkpoint: directory relative to the dsbox package
    bos_token_id: int = 2
    eos_token_id: int = 2
    pad_token_id: int = 1
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for attr in ("hidden_size", "num_layers", "num_heads", "ffn_dim", "vocab_size",
                     "max_position_embeddings"):
            if getattr(self, attr) <= 0:
                raise ValueError(f"model {self.name!r}: {attr} must be positive")
        if self.default_slo is not None and self.default_slo not in SLO_PRESETS:
            raise ValueError(f"model {self.name!r}: slo {self.default_slo!r} is not a preset "
                             f"({', '.join(SLO_PRESETS)})")
        if self.default_placement is not None:
            from dsbox.config.placement import Placement

            if not isinstance(self.default_placement, str):
                raise ValueError(f"model {self.name!r}: placement must be placement text such "
                                 f"as \"colocated:tp=1\", got {self.default_placement!r}")
            try:
                text = Placement.parse(self.default_placement).format()
            except ValueError as exc:
                raise ValueError(f"model {self.name!r}: placement "
                                 f"{self.default_placement!r} is not a placement ({exc})") from None
            object.__setattr__(self, "default_placement", text)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model {self.name!r}: hidden_size {self.hidden_size} is not divisible by "
                f"num_heads {self.num_heads}")

    @property
    def bundled_dir(self) -> Path | None:
        """The directory of a checkpoint shipped in the package (None for other models)."""
        return package_path(self.path) if self.path is not None else None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embed_dim(self) -> int:
        """Width of the token embedding (differs from hidden_size only for opt-350m)."""
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def has_projections(self) -> bool:
        return self.embed_dim != self.hidden_size

    @property
    def num_params(self) -> int:
        """Parameter count (lm_head tied, so counted once)."""
        h, f, e = self.hidden_size, self.ffn_dim, self.embed_dim
        per_layer = 4 * (h * h + h) + 2 * h * f + f + h + 2 * 2 * h  # attn, ffn, 2 layer norms
        emb = self.vocab_size * e + (self.max_position_embeddings + 2) * h
        proj = 2 * e * h if self.has_projections else 0
        final_ln = 2 * h if self.do_layer_norm_before else 0
        return self.num_layers * per_layer + emb + proj + final_ln

    def weight_bytes(self, dtype: str = "float16") -> int:
        return self.num_params * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str = "float16") -> int:
        """K and V of one token over all layers."""
        return 2 * self.num_layers * self.hidden_size * DTYPE_BYTES[dtype]

    def to_hf_config(self) -> dict:
        """The fields of a transformers OPTConfig for these shapes."""
        return {
            "model_type": "opt",
            "architectures": ["OPTForCausalLM"],
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "word_embed_proj_dim": self.embed_dim,
            "do_layer_norm_before": self.do_layer_norm_before,
            "activation_function": "relu",
            "enable_bias": True,
            "layer_norm_elementwise_affine": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }

    @classmethod
    def from_hf_config(cls, config: dict, name: str) -> ModelSpec:
        """Build from the dict of an HF ``config.json`` (OPT only)."""
        model_type = config.get("model_type", "opt")
        if model_type != "opt":
            raise ValueError(f"{name}: model_type {model_type!r} is not supported (OPT only)")
        if config.get("activation_function", "relu") != "relu":
            raise ValueError(f"{name}: activation {config['activation_function']!r} unsupported")
        hidden = config["hidden_size"]
        proj = config.get("word_embed_proj_dim", hidden)
        return cls(
            name=name,
            hidden_size=hidden,
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            ffn_dim=config["ffn_dim"],
            vocab_size=config.get("vocab_size", 50272),
            max_position_embeddings=config.get("max_position_embeddings", 2048),
            word_embed_proj_dim=None if proj == hidden else proj,
            do_layer_norm_before=config.get("do_layer_norm_before", True),
            bos_token_id=config.get("bos_token_id", 2),
            eos_token_id=config.get("eos_token_id", 2),
            pad_token_id=config.get("pad_token_id", 1),
        )

    @classmethod
    def from_hf_dir(cls, path: Path) -> ModelSpec:
        cfg = path / "config.json"
        try:
            data = json.loads(cfg.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{cfg}: no config.json in the checkpoint directory") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cfg}: not valid JSON ({exc})") from None
        return cls.from_hf_config(data, name=path.name)


SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "ffn_dim", "max_position_embeddings",
              "word_embed_proj_dim", "do_layer_norm_before")
ENTRY_KEYS = (*SHAPE_KEYS, "hf_repo", "bundled", "description", "path", "slo", "placement")


def package_path(relative: str) -> Path:
    """A path inside the installed ``dsbox`` package (a real directory: dsbox is never
    imported from a zip)."""
    return Path(str(resources.files("dsbox").joinpath(relative)))


def _registry_entry(name: str, entry: dict) -> ModelSpec:
    try:
        return _build_entry(name, entry)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("models.toml"):
            raise
        raise ValueError(f"models.toml [{name}]: {message}") from None


def _build_entry(name: str, entry: dict) -> ModelSpec:
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ValueError(f"models.toml [{name}]: unknown key(s) {', '.join(unknown)}")
    if "path" in entry:
        given = [k for k in SHAPE_KEYS if k in entry]
        if given:
            raise ValueError(f"models.toml [{name}]: a `path` entry takes its shapes from the "
                             f"checkpoint's config.json; remove {', '.join(given)}")
        if entry.get("bundled") is False:
            raise ValueError(f"models.toml [{name}]: a `path` entry is bundled")
        directory = package_path(entry["path"])
        shapes = ModelSpec.from_hf_dir(directory)
        return replace(shapes, name=name, hf_repo=entry.get("hf_repo"), bundled=True,
                       description=entry.get("description", ""), path=entry["path"],
                       default_slo=entry.get("slo"), default_placement=entry.get("placement"))
    return ModelSpec(
        name=name,
        hidden_size=entry["hidden_size"],
        num_layers=entry["num_layers"],
        num_heads=entry["num_heads"],
        ffn_dim=entry["ffn_dim"],
        max_position_embeddings=entry.get("max_position_embeddings", 2048),
        word_embed_proj_dim=entry.get("word_embed_proj_dim"),
        do_layer_norm_before=entry.get("do_layer_norm_before", True),
        hf_repo=entry.get("hf_repo"),
        bundled=entry.get("bundled", False),
        description=entry.get("description", ""),
        default_slo=entry.get("slo"),
        default_placement=entry.get("placement"),
    )


def registry_path() -> Path | None:
    """The registry file a user chose (``$DSBOX_MODELS_TOML``, set by ``--models-file``),
    or None for the one shipped with dsbox."""
    env = os.environ.get(MODELS_TOML_ENV)
    return Path(env).expanduser() if env else None


def load_registry() -> dict[str, ModelSpec]:
    """All models of the registry (``models.toml``), by name, in file order."""
    path = registry_path()
    if path is None:
        text = resources.files("dsbox").joinpath("models.toml").read_text()
        where = "models.toml"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the model registry ({exc.strerror}); "
                             f"${MODELS_TOML_ENV} names it") from None
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: not valid TOML ({exc})") from None
    try:
        return {name: _registry_entry(name, entry) for name, entry in data.items()}
    except ValueError as exc:
        if path is None:
            raise
        raise ValueError(str(exc).replace("models.toml", str(path), 1)) from None


def get_model_spec(name: str) -> ModelSpec:
    """Registry entry by name (``opt-13b``, ``facebook/opt-13b`` or ``OPT-13B`` all work)."""
    registry = load_registry()
    key = name.lower().removeprefix("facebook/")
    if key not in registry:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(registry)}")
    return registry[key]


DEFAULT_MODEL = "dsbox-chat"
