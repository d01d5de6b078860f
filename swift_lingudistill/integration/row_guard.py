"""Rows swift drops or replaces while training: counted, logged at each logging step (``bad_rows``) and, past
``preflight.max_bad_rows`` (0 by default), fatal with the row named and the fix.

swift's lazy dataset (``--strict false``, its default) skips a row longer than ``--max_length`` without a word
and replaces a row its template cannot encode (an unreadable image...) by another random row, logging a
traceback that names no file. ``install_row_guard`` makes swift's SFT pipeline build this module's subclass
of that dataset instead; it behaves as swift's own when LinguDistill is not in use.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from swift.dataset import LazyLLMDataset
from swift.metrics.utils import Metric
from swift.template import MaxLengthError
from swift.utils import get_logger

from ..preflight import check_images, image_refs
from .run_state import active_run

__all__ = ["BadRowCounter", "BadRowsError", "BadRowsMetric", "GuardedLazyDataset", "install_row_guard"]

logger = get_logger()
_LOGGED = 10  # bad rows described in the log, per process
_MAX_HASHES = 1_000_000  # distinct rows remembered (8 MB); past it, repeats of a bad row count again


def _row_key(row: Any) -> int:
    text = json.dumps(row, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little", signed=True)


class BadRowsError(RuntimeError):
    """More rows than ``preflight.max_bad_rows`` could not be trained on as written."""


class BadRowCounter:
    """Distinct bad rows of one training process, shared with its dataloader workers (inherited when they start).

    A row is counted once however often it is drawn (swift's own preview of row 0, every epoch, any worker): its
    content's hash is kept in shared memory, up to ``allowed + 1`` of them, which is all the verdict needs.
    """

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self._capacity = min(allowed + 1, _MAX_HASHES)
        self._hashes = multiprocessing.Array("q", self._capacity)  # its lock guards the count as well
        self._count = multiprocessing.Value("q", 0, lock=False)
        self._reported = 0  # what the metric has logged so far (training process only)
        self.last: str = ""

    @property
    def total(self) -> int:
        return int(self._count.value)

    def add(self, row: Any, error: Exception) -> None:
        key = _row_key(row)
        with self._hashes.get_lock():
            count = int(self._count.value)
            seen = np.frombuffer(self._hashes.get_obj(), dtype=np.int64)[: min(count, self._capacity)]
            if bool((seen == key).any()):
                return
            if count < self._capacity:
                self._hashes[count] = key
            self._count.value = count + 1
        self.last = _describe(row, error)
        if count < _LOGGED:
            logger.warning(f"LinguDistill: bad row {count + 1} (preflight.max_bad_rows: {self.allowed}): {self.last}")

    def error(self) -> BadRowsError | None:
        if self.total <= self.allowed:
            return None
        return BadRowsError(
            f"LinguDistill: swift could not train on a row as written: {self.last}. This is bad row {self.total} "
            f"of this process, and preflight.max_bad_rows allows {self.allowed}, so the run stops. Fix: repair or "
            "remove the row (`python -m swift_lingudistill tag-report` with `preflight: {max_rows: null}` lists "
            "every such row before training), or allow them with `preflight: {max_bad_rows: N}` (counted in the "
            "bad_rows metric). swift's --strict true stops at the first such row as well."
        )

    def take_new(self) -> int:
        """Bad rows since the last call (for one logging step)."""
        total = self.total
        new, self._reported = total - self._reported, total
        return new


def _describe(row: Any, error: Exception) -> str:
    row = row if isinstance(row, dict) else {}
    parts = [f"from {row['dataset']}"] if row.get("dataset") else []
    images = [str(i.get("path") if isinstance(i, dict) else i)[:120] for i in image_refs(row)[:2]]
    if images:
        parts.append(f"images {images}")
    for message in row.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            parts.append(f"user turn {message['content'][:60]!r}")
            break
    unreadable = check_images(row)
    if isinstance(error, MaxLengthError):
        why = f"longer than --max_length ({error}); swift drops such a row without a word"
    elif unreadable:
        why = f"{'; '.join(unreadable)}; swift replaces such a row by another random row"
    else:
        why = f"{type(error).__name__}: {str(error)[:160]}; swift replaces such a row by another random row"
    return f"a row {', '.join(parts) or '(no dataset column)'}: {why}"


class GuardedLazyDataset(LazyLLMDataset):
    """swift's lazy dataset, with every row its encoding refuses counted (and fatal past the allowance)."""

    def __init__(self, dataset: Any, encode_func: Any, **kwargs: Any) -> None:
        run = active_run()
        self.bad_rows: BadRowCounter | None = run.bad_rows if run is not None else None
        if self.bad_rows is not None:
            encode_func = _counted(encode_func, self.bad_rows)
        super().__init__(dataset, encode_func, **kwargs)

    def __getitem__(self, idx: Any) -> Any:
        if self.bad_rows is None or isinstance(idx, str):
            return super().__getitem__(idx)
        try:
            item = super().__getitem__(idx)
        except Exception as e:
            error = self.bad_rows.error()
            if error is not None:
                raise error from e
            raise
        error = self.bad_rows.error()
        if error is not None:
            raise error
        return item


def _counted(encode_func: Any, counter: BadRowCounter) -> Any:
    def encode(row: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return encode_func(row, *args, **kwargs)
        except Exception as e:  # exactly what swift's lazy dataset catches
            counter.add(row, e)
            raise

    return encode


class BadRowsMetric(Metric):
    """``bad_rows`` in swift's logs: rows dropped or replaced since the last logging step, summed over ranks."""

    def __init__(self, counter: BadRowCounter, device: Any = None) -> None:
        super().__init__()
        self.counter = counter
        self.device = device

    def update(self, value: float) -> None:
        """Nothing to add: the count lives in the shared counter."""

    def compute(self) -> dict:
        new = float(self.counter.take_new())
        if dist.is_initialized():
            tensor = torch.tensor([new], dtype=torch.float32, device=self.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            new = float(tensor.item())
        return {"value": new}


def install_row_guard() -> None:
    """Make swift's SFT pipeline build ``GuardedLazyDataset`` (idempotent)."""
    from swift.pipelines.train import sft

    current = getattr(sft, "LazyLLMDataset", None)
    if current is GuardedLazyDataset:
        return
    if current is not LazyLLMDataset:
        raise ImportError(
            "ms-swift's SFT pipeline no longer builds swift.dataset.LazyLLMDataset by that name; this "
            "swift-lingudistill release cannot count the rows it drops. Fix: install the supported ms-swift."
        )
    sft.LazyLLMDataset = GuardedLazyDataset
