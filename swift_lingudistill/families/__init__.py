"""One adapter per supported VLM family; ``family_for`` picks it from the student's model type."""

from __future__ import annotations

from typing import Any

from .base import FamilyAdapter, LineageSpec, lineage_of
from .qwen2_vl import Qwen2VLFamily

__all__ = ["FAMILIES", "FamilyAdapter", "LineageSpec", "UnsupportedFamilyError", "family_for", "lineage_of"]

FAMILIES: tuple[FamilyAdapter, ...] = (Qwen2VLFamily(),)


class UnsupportedFamilyError(ValueError):
    """The student's model type has no LinguDistill adapter."""


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
