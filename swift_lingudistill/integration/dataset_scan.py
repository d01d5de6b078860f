"""The pre-flight's view of swift's datasets: which ``--dataset`` entries are local files, each row turned
into what swift's own preprocessor makes of it, and its token length from swift's own template.

Nothing here loads a model: the template needs the student's processor only (tokenizer and image processor).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..preflight import PreflightError, RowTooLong

__all__ = ["DatasetEntry", "dataset_entries", "length_meter", "standardizer"]

_SCANNED_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class DatasetEntry:
    """One ``--dataset`` / ``--val_dataset`` entry as swift resolves it."""

    given: str  # as on the command line
    name: str  # what swift records in each row's `dataset` column (the path, or the hub id)
    path: Path | None  # the local file whose rows the pre-flight reads; None when it cannot read them
    preprocess: Any  # swift's preprocess_func for it
    note: str = ""  # why it is not read, when path is None


def dataset_entries(entries: list[str], use_hf: bool | None = None) -> list[DatasetEntry]:
    """Resolve each entry as ``swift.dataset.load_dataset`` does; a local path that does not exist stops here."""
    from swift.dataset.dataset_meta import DATASET_MAPPING
    from swift.dataset.dataset_syntax import DatasetSyntax

    resolved = []
    for given in entries:
        syntax = DatasetSyntax.parse(given)
        meta = DATASET_MAPPING.get(syntax.dataset)
        if meta is not None and meta.dataset_path is not None and syntax.use_hf is None:
            syntax.dataset, syntax.dataset_type = meta.dataset_path, "path"
        if syntax.dataset_type != "path":
            if _looks_like_a_file(syntax.dataset):
                raise PreflightError(
                    f"--dataset {given!r}: the file {syntax.dataset!r} does not exist (relative to "
                    f"{os.getcwd()}). Fix: give the path of your JSONL (swift's messages format), or a hub "
                    "dataset id"
                )
            resolved.append(DatasetEntry(given, syntax.dataset, None, None, "a hub or registered dataset"))
            continue
        meta = meta or syntax.get_dataset_meta(use_hf)
        path = Path(syntax.dataset)
        if path.suffix.lower() not in _SCANNED_SUFFIXES:
            resolved.append(DatasetEntry(given, syntax.dataset, None, None, f"a {path.suffix or 'suffix-less'} file"))
            continue
        resolved.append(DatasetEntry(given, syntax.dataset, path, meta.preprocess_func))
    return resolved


def _looks_like_a_file(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.lower().endswith((".jsonl", ".json", ".csv", ".parquet"))


def standardizer(entry: DatasetEntry, columns: dict[str, str] | None = None) -> Callable | None:
    """row -> the rows swift's preprocessor makes of it (strict: its errors raise), with swift's ``dataset``
    column; None when the entry's preprocessor is not one of swift's row preprocessors."""
    from swift.dataset.preprocessor import (
        AlpacaPreprocessor,
        AutoPreprocessor,
        MessagesPreprocessor,
        ResponsePreprocessor,
        RowPreprocessor,
    )

    func = entry.preprocess
    if not isinstance(func, (RowPreprocessor, AutoPreprocessor)):
        return None
    by_keys: dict[frozenset, RowPreprocessor] = {}

    def pick(row: dict) -> RowPreprocessor:
        """AutoPreprocessor's choice, made on the row's keys instead of the dataset's columns."""
        if isinstance(func, RowPreprocessor):
            return func
        keys = frozenset(row)
        if keys not in by_keys:
            if keys & {"conversation", "conversations", "messages"}:
                by_keys[keys] = MessagesPreprocessor(**func.kwargs)
            elif "instruction" in keys and "input" in keys:
                by_keys[keys] = AlpacaPreprocessor(**func.kwargs)
            else:
                by_keys[keys] = ResponsePreprocessor(**func.kwargs)
        return by_keys[keys]

    def standardize(raw: dict) -> list[dict]:
        row = _renamed(dict(raw), columns or {})
        if isinstance(func, AutoPreprocessor):
            row = _renamed(row, func.columns)
        pre = pick(row)
        row = _renamed(_renamed(row, pre.origin_columns), pre.columns)
        batched = pre.batched_preprocess(RowPreprocessor.rows_to_batched([row]), strict=True,
                                         ignore_max_length_error=False)  # fmt: skip
        rows = RowPreprocessor.batched_to_rows(batched) if batched.get("messages") else []
        keep = set(RowPreprocessor.standard_keys)
        return [{**{k: v for k, v in r.items() if k in keep}, "dataset": entry.name} for r in rows]

    return standardize


def _renamed(row: dict, columns: dict[str, str]) -> dict:
    """``RowPreprocessor.safe_rename_columns`` on one row: case-insensitive, no two columns onto one name."""
    by_lower = {k.lower(): k for k in row}
    mapping = {by_lower[k.lower()]: v for k, v in columns.items() if k.lower() in by_lower}
    targets = Counter(mapping.values())
    mapping = {k: v for k, v in mapping.items() if targets[v] == 1 and k != v}
    return {mapping.get(k, k): v for k, v in row.items()}


def length_meter(template: Any, max_length: int | None, truncation_strategy: str | None) -> Callable[[dict], int]:
    """row -> its token length under the run's template; raises RowTooLong where swift would drop the row.

    The template measures with no limit of its own, so the length is the real one, not swift's error.
    """
    drops = max_length is not None and truncation_strategy in (None, "delete")

    def measure(row: dict) -> int:
        encoded = template.encode(dict(row), return_length=True)
        length = int(encoded["length"])
        if drops and length > max_length:
            raise RowTooLong(length)
        return length

    return measure
