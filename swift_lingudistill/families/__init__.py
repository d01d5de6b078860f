"""One adapter per supported VLM family. Adding a family is one new file here: every ``FamilyAdapter``
subclass defined in a module of this package is found and registered when the package is imported."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import FamilyAdapter, LineageSpec, lineage_of, unwrap_model

__all__ = [
    "FAMILIES",
    "FamilyAdapter",
    "LineageSpec",
    "UnsupportedFamilyError",
    "family_for",
    "lineage_of",
    "supported_model_types",
    "unwrap_model",
]


class UnsupportedFamilyError(ValueError):
    """The student's model type has no LinguDistill adapter."""


def _discover() -> tuple[FamilyAdapter, ...]:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    found, seen = [], set()
    stack = list(FamilyAdapter.__subclasses__())
    while stack:
        cls = stack.pop(0)
        stack.extend(cls.__subclasses__())
        if cls.swift_model_types and cls not in seen:
            seen.add(cls)
            found.append(cls())
    names = [t for f in found for t in f.swift_model_types]
    duplicates = sorted({t for t in names if names.count(t) > 1})
    if duplicates:
        raise RuntimeError(f"two LinguDistill family adapters claim the same model_type: {duplicates}")
    return tuple(sorted(found, key=lambda f: f.name))


FAMILIES: tuple[FamilyAdapter, ...] = _discover()


def supported_model_types() -> list[str]:
    return sorted({t for family in FAMILIES for t in family.swift_model_types})


def family_for(model_type: str | None = None, config: Any = None) -> FamilyAdapter:
    """The adapter for a swift ``model_type`` (preferred) or a transformers config's ``model_type``."""
    hf_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.swift_model_types or (model_type is None and hf_type in family.hf_model_types):
            return family
    raise UnsupportedFamilyError(
        f"LinguDistill has no adapter for the student model_type {model_type or hf_type!r}. "
        f"Supported model types: {', '.join(supported_model_types())}. "
        "Fix: train one of those, or add an adapter in swift_lingudistill/families/ (one file)."
    )
