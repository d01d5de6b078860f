"""The images a row names, and whether each one can be read: what swift would only find while training (and
then replace the row with another one, naming no file)."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Any

__all__ = ["check_images", "image_refs"]

_IMAGE_PART_KEYS = ("image", "image_url")
_PATH_HEURISTIC = 2000  # longer strings are base64 data, as swift reads them


def image_refs(row: dict[str, Any]) -> list[Any]:
    """Every image reference of a row: its ``images`` column and image parts inside ``messages``."""
    refs: list[Any] = []
    images = row.get("images")
    if isinstance(images, (str, bytes, dict)):
        images = [images]
    for item in images or ():
        if isinstance(item, dict):
            item = item.get("bytes") or item.get("path")
        if item:
            refs.append(item)
    for message in row.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") in _IMAGE_PART_KEYS:
                value = part.get(part["type"])
                if isinstance(value, dict):
                    value = value.get("url")
                if value:
                    refs.append(value)
    return refs


def check_images(row: dict[str, Any]) -> list[str]:
    """One problem per image that cannot be opened and decoded (empty when all are fine).

    Paths resolve as swift resolves them: as written, then under ``$ROOT_IMAGE_DIR``. URLs are not fetched.
    """
    problems = []
    for ref in image_refs(row):
        problem = _check_one(ref)
        if problem:
            problems.append(problem)
    return problems


def _check_one(ref: Any) -> str | None:
    from PIL import Image

    if isinstance(ref, bytes):
        data, name = ref, "inline image bytes"
    elif isinstance(ref, str):
        ref = ref.strip()
        if ref.startswith(("http://", "https://")):
            return None  # fetched by swift while training; not fetched here
        path = _resolve(ref)
        if path is None:
            decoded = _base64(ref)
            if decoded is None:
                hint = " (relative paths are read from the working directory, then $ROOT_IMAGE_DIR)"
                return f"image {ref!r} does not exist{hint if not os.path.isabs(ref) else ''}"
            data, name = decoded, "inline base64 image"
        else:
            try:
                data, name = path.read_bytes(), str(path)
            except OSError as e:
                return f"image {str(path)!r} cannot be read ({e.strerror})"
    else:
        return None  # a decoded image object: nothing to check
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes the pixels: a truncated file fails here, not at open
    except Exception as e:  # PIL raises many types; all mean "not an image"
        return f"{name} is not a readable image ({type(e).__name__}: {e})"
    return None


def _resolve(ref: str) -> Path | None:
    if len(ref) > _PATH_HEURISTIC or ref.startswith("data:"):
        return None
    candidates = [Path(ref).expanduser()]
    root = os.environ.get("ROOT_IMAGE_DIR")
    if root:
        candidates.append(Path(root, ref).expanduser())
    return next((c for c in candidates if c.is_file()), None)


def _base64(ref: str) -> bytes | None:
    text = ref.split("base64,", 1)[1] if ref.startswith("data:") and "base64," in ref else ref
    if len(text) < 32:  # a short string that is no file is a missing path, not image data
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
