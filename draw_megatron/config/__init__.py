"""Typed configs: the base machinery, the model config and presets, the run's tree."""

from draw_megatron.config.base import (
    Config,
    ConfigError,
    apply_overrides,
    dump_yaml,
    load_yaml,
    parse_override,
    save_config,
)
from draw_megatron.config.model import (
    PRESETS,
    ModelConfig,
    count_parameters,
    largest_module_parameters,
    load_model_config,
)
from draw_megatron.config.run import RunConfig, load_run_config

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "ModelConfig",
    "RunConfig",
    "apply_overrides",
    "count_parameters",
    "dump_yaml",
    "largest_module_parameters",
    "load_model_config",
    "load_run_config",
    "load_yaml",
    "parse_override",
    "save_config",
]
