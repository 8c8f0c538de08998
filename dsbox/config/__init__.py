"""Configuration dataclasses shared by the engine, the runtime, the planner and the CLI."""

from dsbox.config.engine_config import EngineConfig
from dsbox.config.model_spec import DEFAULT_MODEL, ModelSpec, get_model_spec, load_registry
from dsbox.config.placement import InstanceSpec, Placement
from dsbox.config.slo import SLO, SLO_PRESETS

__all__ = ["EngineConfig", "DEFAULT_MODEL", "InstanceSpec", "ModelSpec", "Placement", "SLO",
           "SLO_PRESETS", "get_model_spec", "load_registry"]
