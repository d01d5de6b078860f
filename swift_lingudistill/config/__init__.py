"""The plugin's configuration: the schema (``schema``), the paper's tagging defaults (``tagging_defaults``),
reading it from YAML with every problem reported (``loading``) and the configs shipped in the package by their
short names (``shipped``); ``partial`` loads one for a command that reads only some sections. Import the names
from here (re-exported with ``as``, the explicit form)."""

from .loading import CONFIG_ENV as CONFIG_ENV
from .loading import ConfigError as ConfigError
from .loading import config_from_dict as config_from_dict
from .loading import displayed_value as displayed_value
from .loading import dump_config as dump_config
from .loading import format_validation_error as format_validation_error
from .loading import load_config as load_config
from .partial import load_config_for as load_config_for
from .schema import DIVERGENCES as DIVERGENCES
from .schema import JSD_DEFAULT_BETA as JSD_DEFAULT_BETA
from .schema import SELF_TEACHER as SELF_TEACHER
from .schema import Divergence as Divergence
from .schema import KVShareConfig as KVShareConfig
from .schema import LinguDistillConfig as LinguDistillConfig
from .schema import LossConfig as LossConfig
from .schema import MonitorConfig as MonitorConfig
from .schema import PreflightConfig as PreflightConfig
from .schema import TaggingConfig as TaggingConfig
from .schema import TeacherConfig as TeacherConfig
from .shipped import resolve_config_path as resolve_config_path
from .shipped import shipped_config_names as shipped_config_names
from .shipped import shipped_config_path as shipped_config_path
from .tagging_defaults import DEFAULT_CATEGORIES as DEFAULT_CATEGORIES
from .tagging_defaults import DEFAULT_VISION_PATTERNS as DEFAULT_VISION_PATTERNS
from .tagging_defaults import normalize_category as normalize_category
from .tagging_defaults import parse_weight as parse_weight
