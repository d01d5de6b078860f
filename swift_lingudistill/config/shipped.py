"""The configs that ship inside the package (``swift_lingudistill/configs/*.yaml``), named by their short names.

``LINGUDISTILL_CONFIG=selective`` works after ``pip install`` from any folder: a value that is an existing file is
that file; otherwise a shipped name (``selective``, ``uniform``, ``self_teacher``) is the packaged YAML. The
repository's ``plugin_configs/`` is a symlink to the same folder, so there is one copy of each file.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHIPPED_DIR", "looks_like_a_name", "resolve_config_path", "shipped_config_names", "shipped_config_path"]

# Inside the package, so wheels and sdists carry it (package data in pyproject.toml).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"
_SUFFIXES = (".yaml", ".yml")


def shipped_config_names() -> list[str]:
    """The short names of the shipped configs, sorted: ``['selective', 'self_teacher', 'uniform']``."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def looks_like_a_name(value: str | os.PathLike) -> bool:
    """A bare word without a folder: meant as a shipped name (``selective``, ``uniform.yaml``), not a path."""
    text = str(value).strip()
    return bool(text) and "/" not in text and os.sep not in text


def shipped_config_path(name: str | os.PathLike) -> Path | None:
    """The packaged file of a shipped name (``selective`` or ``selective.yaml``), or None."""
    if not looks_like_a_name(name):
        return None
    stem = str(name).strip()
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    return SHIPPED_DIR / f"{stem}.yaml" if stem in shipped_config_names() else None


def resolve_config_path(value: str | os.PathLike) -> Path:
    """The file a config value names: an existing path wins, then a shipped name, else the value as a path (whose
    absence the loader reports with the known names)."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    return shipped_config_path(value) or path
