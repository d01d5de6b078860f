"""The plugin's configuration: the schema (``schema``), the paper's tagging defaults (``tagging_defaults``) and
reading it from YAML with every problem reported (``loading``). Import the names from here."""

from .loading import CONFIG_ENV, ConfigError, config_from_dict, dump_config, format_validation_error, load_config
from .schema import (
    DIVERGENCES,
    JSD_DEFAULT_BETA,
    SELF_TEACHER,
    Divergence,
    KVShareConfig,
    LinguDistillConfig,
    LossConfig,
    MonitorConfig,
    TaggingConfig,
    TeacherConfig,
)
from .tagging_defaults import DEFAULT_CATEGORIES, DEFAULT_VISION_PATTERNS, normalize_category, parse_weight

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CATEGORIES",
    "DEFAULT_VISION_PATTERNS",
    "DIVERGENCES",
    "JSD_DEFAULT_BETA",
    "SELF_TEACHER",
    "ConfigError",
    "Divergence",
    "KVShareConfig",
    "LinguDistillConfig",
    "LossConfig",
    "MonitorConfig",
    "TaggingConfig",
    "TeacherConfig",
    "config_from_dict",
    "dump_config",
    "format_validation_error",
    "load_config",
    "normalize_category",
    "parse_weight",
]
