"""Configuration layer: the schema (pydantic models with SI floats, pint units) and its
loading from YAML. Imports nothing else of nzsp_fem."""

from .loading import apply_override, as_config, load_config, parse_config, parse_override, with_value
from .schema import Config, ConfigError, check_parameter_path, config_value
from .units import to_si

__all__ = [
    "Config",
    "ConfigError",
    "apply_override",
    "as_config",
    "check_parameter_path",
    "config_value",
    "load_config",
    "parse_config",
    "parse_override",
    "to_si",
    "with_value",
]
