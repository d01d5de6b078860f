"""Reading a config: YAML, ``${VAR}`` references, and pydantic's errors turned into one line per problem.

`swift sft` cannot take new flags (arguments are parsed before plugins load), so the config travels the
way swift passes plugin knobs: the ``LINGUDISTILL_CONFIG`` environment variable, set from the shell, from a
swift YAML config's ``ENV:`` block, or with ``--model_kwargs '{"lingudistill_config": "..."}'``.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .schema import LinguDistillConfig
from .shipped import resolve_config_path, shipped_config_names

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "config_from_dict",
    "displayed_value",
    "dump_config",
    "format_validation_error",
    "load_config",
]

CONFIG_ENV = "LINGUDISTILL_CONFIG"


class ConfigError(ValueError):
    """A config that cannot be used, with every problem named: the field, the value, why, and the fix."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str, problems: list[str], refs: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` in strings by the environment variable; an unset variable is an error, not ''.

    ``refs`` collects 'section.field' -> the original text of every value that named a variable, so that logs
    and saved files can show the variable's name instead of its value (a token, a private path).
    """
    refs = {} if refs is None else refs
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), problems, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", problems, refs) for i, v in enumerate(value)]
    if isinstance(value, str) and _ENV_REF.search(value):
        refs[where] = value

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


_SECTION_EXAMPLES = {
    "teacher": "teacher:\n        model: {value}",
    "kv_share": "kv_share:\n        scope: image",
    "loss": "loss:\n        lambda: 1.0",
    "tagging": "tagging:\n        default: distill",
    "monitor": "monitor:\n        dataset: held_out.jsonl",
    "preflight": "preflight:\n        max_rows: 1000",
}


def format_validation_error(
    error: ValidationError,
    source: str,
    root: type[BaseModel] = LinguDistillConfig,
    lines: dict[str, int] | None = None,
) -> str:
    """Turn pydantic's errors into one message per problem: field, value, where, why, fix.

    ``source`` names what was validated (first line: ``Invalid <source>:``); ``root`` is the model it was
    validated with (the whole config, or one section such as ``LossConfig``); ``lines`` maps 'section.field'
    to the file line it was written on.
    """
    out = [f"Invalid {source}:"]
    lines = lines or {}
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        at = _line_of(loc, lines)
        kind = item["type"]
        value = item.get("input")
        if len(loc) == 1 and loc[0] in _SECTION_EXAMPLES and kind in ("model_type", "dict_type"):
            example = _SECTION_EXAMPLES[loc[0]].format(value=value if isinstance(value, str) else "...")
            out.append(
                f"  - {path} = {value!r}{at}: {path} is a section of settings, not a single value. "
                f"Fix: write it as\n      {example}"
            )
        elif kind == "finite_number":
            out.append(
                f"  - {path} = {value!r}{at}: not a finite number (NaN or infinity). Fix: write a number. "
                f"{_field_hint(loc, root)}".rstrip()
            )
        elif kind == "extra_forbidden":
            section = _section_model(loc[:-1], root)
            valid = sorted((f.alias or k) for k, f in section.model_fields.items()) if section else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            did_you_mean = f" (did you mean `{close[0]}`?)" if close else ""
            out.append(
                f"  - {path}{at}: unknown key{did_you_mean}. Fix: remove it; "
                f"{'.'.join(map(str, loc[:-1])) or 'the top level'} accepts: {', '.join(valid)}"
            )
        elif kind == "missing":
            fix = (_MISSING_FIXES.get(loc) if root is LinguDistillConfig else None) or _field_hint(loc, root)
            out.append(f"  - {path}{at}: required but missing. {fix}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = f" = {value!r}" if not isinstance(value, dict) else ""
            out.append(f"  - {path}{shown}{at}: {message}. {_field_hint(loc, root)}".rstrip())
    return "\n".join(out)


def _line_of(loc: tuple, lines: dict[str, int]) -> str:
    """' (line N)' for the deepest part of ``loc`` the file spelled out, or ''."""
    parts = [str(p) for p in loc]
    while parts:
        line = lines.get(".".join(parts))
        if line is not None:
            return f" (line {line})"
        parts.pop()
    return ""


def config_from_dict(data: Any, source: str = "<dict>", lines: dict[str, int] | None = None) -> LinguDistillConfig:
    """Validate a parsed config, expanding ``${VAR}`` references, or raise ConfigError.

    ``lines`` ('section.field' -> line in ``source``) puts the line of each problem in the message.
    """
    if data is None:
        raise ConfigError(
            f"LinguDistill config {source} is empty. Fix: start from a shipped one, e.g. "
            "`python -m swift_lingudistill config selective --out my_config.yaml`"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"LinguDistill config {source} must be a mapping of sections (teacher, kv_share, loss, tagging), "
            f"got {type(data).__name__}"
        )
    problems = _blank_strings(data, "", lines or {})
    refs: dict[str, str] = {}
    data = _expand_env(data, "", problems, refs)
    if problems:
        raise ConfigError(f"Invalid LinguDistill config {source}:\n" + "\n".join(f"  - {p}" for p in problems))
    try:
        config = LinguDistillConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"LinguDistill config {source}", lines=lines)) from None
    return config.remember_env_refs(refs)


def _blank_strings(value: Any, where: str, lines: dict[str, int]) -> list[str]:
    """Every blank string (``"   "``), keys and list items included: never a value the user meant."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and not key.strip():
                found.append(f"{where or 'the top level'} has a blank key{_line_of((path,), lines)}. Fix: name it")
            found += _blank_strings(item, path, lines)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _blank_strings(item, f"{where}[{i}]", lines)
    elif isinstance(value, str) and not value.strip():
        found.append(f"{where} = {value!r}{_line_of((where,), lines)}: blank. Fix: write a value, or remove the key")
    return found


def load_config(path: str | os.PathLike) -> LinguDistillConfig:
    """Read and validate a YAML config file, or a shipped one by name (``selective``); every problem is reported
    with its line and its fix."""
    named, path = str(path), resolve_config_path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ConfigError(
            f"LinguDistill config {str(path)!r} is a directory, not a YAML file{hint}. "
            f"Fix: name the file itself, e.g. {path / (inside[0] if inside else 'selective.yaml')}"
        )
    if not path.is_file():
        close = difflib.get_close_matches(named, shipped_config_names(), n=1)
        raise ConfigError(
            f"LinguDistill config {named!r} is neither a file nor a shipped config"
            f"{f' (did you mean `{close[0]}`?)' if close else ''} (from {CONFIG_ENV} or the "
            f"command line). Fix: name a shipped one ({', '.join(shipped_config_names())}) or a YAML file; "
            "`python -m swift_lingudistill config selective --out my_config.yaml` writes one to edit"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines, duplicates = _key_lines(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"LinguDistill config {path} is not valid YAML: {e}") from None
    if duplicates:
        raise ConfigError(f"Invalid LinguDistill config {path}:\n" + "\n".join(f"  - {d}" for d in duplicates))
    return config_from_dict(data, str(path), lines)


def _key_lines(text: str) -> tuple[dict[str, int], list[str]]:
    """'section.field' -> the 1-based line of its key, and every key written twice in one mapping.

    YAML lets the last of two equal keys win silently; a config that sets ``lambda`` twice is refused.
    """
    lines: dict[str, int] = {}
    duplicates: list[str] = []

    def walk(node: yaml.Node | None, where: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, tuple[int, yaml.Node]] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                path = f"{where}.{key}" if where else key
                line = key_node.start_mark.line + 1
                if key in seen:
                    first_line, first_value = seen[key]
                    duplicates.append(
                        f"{path} is set twice: line {first_line} ({_scalar(first_value)}) and line {line} "
                        f"({_scalar(value_node)}); YAML would keep the second silently. Fix: keep one of them"
                    )
                else:
                    seen[key] = (line, value_node)
                    lines[path] = line
                walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{where}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{where}[{i}]")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return lines, duplicates


def _scalar(node: yaml.Node) -> str:
    return repr(node.value) if isinstance(node, yaml.ScalarNode) else "a section"


def dump_config(config: LinguDistillConfig) -> str:
    """The resolved config (defaults filled in) as YAML, as written next to swift's args.json and logged.

    A value read from ``${VAR}`` is written as that text, never as the variable's value: loading the dump
    again re-reads the variable (a resume does, and says so when it is unset).
    """
    data = config.model_dump(mode="json", by_alias=True)
    for path, text in config.env_refs.items():
        section, _, key = path.partition(".")
        if section in data and isinstance(data[section], dict) and key in data[section]:
            data[section][key] = text
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def displayed_value(config: LinguDistillConfig, path: str, value: Any) -> str:
    """What logs may show for the field at ``path``: its ``${VAR}`` text when it came from one, else ``value``."""
    return config.env_refs.get(path, str(value))
