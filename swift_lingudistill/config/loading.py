"""Reading a config: YAML, ``${VAR}`` references, and pydantic's errors turned into one line per problem.

`swift sft` cannot take new flags (arguments are parsed before plugins load), so the config travels the
way swift passes plugin knobs: the ``LINGUDISTILL_CONFIG`` environment variable, set from the shell, from a
swift YAML config's ``ENV:`` block, or with ``--model_kwargs '{"lingudistill_config": "..."}'``.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .schema import LinguDistillConfig

__all__ = ["CONFIG_ENV", "ConfigError", "config_from_dict", "dump_config", "format_validation_error", "load_config"]

CONFIG_ENV = "LINGUDISTILL_CONFIG"


class ConfigError(ValueError):
    """A config that cannot be used, with every problem named: the field, the value, why, and the fix."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` in strings by the environment variable; an unset variable is an error, not ''."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append(
                    f"{where} = {value!r}: environment variable {name} is not set. "
                    f"Fix: export {name}=... before running, or write the value into the config"
                )
                return match.group(0)
            return os.environ[name]

        return _ENV_REF.sub(sub, value)
    return value


def _section_model(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            # also accept aliases such as `lambda`
            field = next((f for f in model.model_fields.values() if f.alias == part), None)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return model
    return model


def _field_hint(loc: tuple, root: type[BaseModel]) -> str:
    section = _section_model(loc[:-1], root) if loc else None
    if section is None or not loc:
        return ""
    for key, field in section.model_fields.items():
        if (key == loc[-1] or field.alias == loc[-1]) and field.description:
            return f"Expected: {field.description}."
    return ""


_MISSING_FIXES = {
    ("teacher",): "Fix: add a teacher section, e.g.\n      teacher:\n        model: Qwen/Qwen2.5-7B-Instruct  "
    "# the text-only LM the VLM was built from, or `self`",
    ("teacher", "model"): "Fix: set teacher.model to the hub id or local path of the text-only LM the VLM was "
    "built from, or to `self`",
}


def format_validation_error(error: ValidationError, source: str, root: type[BaseModel] = LinguDistillConfig) -> str:
    """Turn pydantic's errors into one message per problem: field, value, why, fix.

    ``source`` names what was validated (first line: ``Invalid <source>:``); ``root`` is the model it was
    validated with (the whole config, or one section such as ``LossConfig``).
    """
    lines = [f"Invalid {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            section = _section_model(loc[:-1], root)
            valid = sorted((f.alias or k) for k, f in section.model_fields.items()) if section else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            did_you_mean = f" (did you mean `{close[0]}`?)" if close else ""
            lines.append(
                f"  - {path}: unknown key{did_you_mean}. Fix: remove it; "
                f"{'.'.join(map(str, loc[:-1])) or 'the top level'} accepts: {', '.join(valid)}"
            )
        elif kind == "missing":
            fix = (_MISSING_FIXES.get(loc) if root is LinguDistillConfig else None) or _field_hint(loc, root)
            lines.append(f"  - {path}: required but missing. {fix}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            value = item.get("input")
            shown = f" = {value!r}" if not isinstance(value, dict) else ""
            lines.append(f"  - {path}{shown}: {message}. {_field_hint(loc, root)}".rstrip())
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<dict>") -> LinguDistillConfig:
    """Validate a parsed config, expanding ``${VAR}`` references, or raise ConfigError."""
    if data is None:
        raise ConfigError(f"LinguDistill config {source} is empty. Fix: start from plugin_configs/selective.yaml")
    if not isinstance(data, dict):
        raise ConfigError(
            f"LinguDistill config {source} must be a mapping of sections (teacher, kv_share, loss, tagging), "
            f"got {type(data).__name__}"
        )
    problems: list[str] = []
    data = _expand_env(data, "", problems)
    if problems:
        raise ConfigError(f"Invalid LinguDistill config {source}:\n" + "\n".join(f"  - {p}" for p in problems))
    try:
        return LinguDistillConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"LinguDistill config {source}")) from None


def load_config(path: str | os.PathLike) -> LinguDistillConfig:
    """Read and validate a YAML config file; every problem is reported with its fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"LinguDistill config file {str(path)!r} does not exist (from {CONFIG_ENV} or the command line). "
            "Fix: point it at a YAML file, e.g. plugin_configs/selective.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"LinguDistill config {path} is not valid YAML: {e}") from None
    return config_from_dict(data, str(path))


def dump_config(config: LinguDistillConfig) -> str:
    """The resolved config (defaults filled in) as YAML, as written next to swift's args.json."""
    data = config.model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
