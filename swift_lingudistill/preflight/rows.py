"""Rows of a local dataset file, read as a stream with their line numbers (a million-row file costs nothing
until its rows are asked for)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PreflightError", "read_rows"]


class PreflightError(ValueError):
    """Something the pre-flight found before the model loads: the value, where it is (file and line), the fix."""


def read_rows(path: str | Path, limit: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``'line N'`` or ``'item N'``, row) for the first ``limit`` rows of a JSONL or JSON file, in file order.

    JSONL is read line by line (blank lines skipped, as ``datasets`` skips them); a JSON file holds one list
    and is parsed whole. A line that is not a JSON object stops the scan with its line number: swift's loader
    would fail on it after the model had loaded.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        yield from _json_rows(path, limit)
        return
    count = 0
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PreflightError(
                    f"{path} line {number} is not valid JSON ({e.msg} at column {e.colno}): {line.strip()[:80]!r}. "
                    "Fix: one JSON object per line (swift's JSONL format)"
                ) from None
            _check_object(row, f"{path} line {number}")
            count += 1
            yield f"line {number}", row


def _json_rows(path: Path, limit: int | None) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PreflightError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise PreflightError(f"{path} holds a JSON {type(data).__name__}; swift reads a list of row objects.")
    for index, row in enumerate(data[:limit] if limit is not None else data, start=1):
        _check_object(row, f"{path} item {index}")
        yield f"item {index}", row


def _check_object(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise PreflightError(
            f"{where} is a JSON {type(row).__name__}, not an object. Fix: each row is an object such as "
            '{"messages": [...], "images": [...]}'
        )
