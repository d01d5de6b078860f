"""Loading a config for a command that reads only some of its sections (``tag-report`` reads ``tagging``).

The shipped configs take the teacher from ``${LINGUDISTILL_TEACHER}``; tagging never reads the teacher, so a
``${VAR}`` used only by sections the command does not need may be unset there. It is left as the literal
``${VAR}`` (visible as such in the loaded config); every other check of the config still runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from string import Template
from typing import Any

import yaml

from .loading import load_config
from .schema import LinguDistillConfig
from .shipped import resolve_config_path

__all__ = ["load_config_for", "unneeded_variables"]


def _references(value: Any) -> Iterator[str]:
    """The names of the ``${VAR}`` references anywhere in a parsed YAML value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, str):
        for match in Template.pattern.finditer(value):
            if match.group("braced"):
                yield match.group("braced")


def unneeded_variables(data: Any, needed: Iterable[str]) -> set[str]:
    """Unset variables referenced only outside the ``needed`` sections of a parsed config."""
    if not isinstance(data, dict):
        return set()
    needed = set(needed)
    inside = {name for key, section in data.items() if key in needed for name in _references(section)}
    outside = {name for key, section in data.items() if key not in needed for name in _references(section)}
    return {name for name in outside - inside if name not in os.environ}


@contextmanager
def _literal(names: set[str]) -> Iterator[None]:
    """Within the block, each unset ``names`` expands to its own literal ``${NAME}``."""
    for name in names:
        os.environ[name] = "${" + name + "}"
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)


def load_config_for(value: str | os.PathLike, sections: Iterable[str]) -> LinguDistillConfig:
    """``load_config`` for a command that reads only ``sections``: unset variables elsewhere are not an error."""
    path = resolve_config_path(value)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except yaml.YAMLError:
        data = None  # load_config reports it
    with _literal(unneeded_variables(data, sections)):
        return load_config(value)
