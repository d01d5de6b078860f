"""``tag-report``: how many rows each tagging rule decides, through swift's own dataset loading."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import LinguDistillConfig
from ..tagging import TagReport, decode_channel
from .dataset_tagging import tagging
from .run_state import PluginUsageError

__all__ = ["check_dataset_names", "tag_report"]

# A --dataset entry ending like this is a file, never a hub id: when it is missing, swift would look it up on the
# hub and fail deep inside with a long traceback.
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet", ".arrow", ".tsv")


def check_dataset_names(datasets: list[str]) -> None:
    """Refuse, before loading anything, a ``--dataset`` entry that names a local file which does not exist."""
    from swift.dataset.dataset_syntax import DatasetSyntax

    for entry in datasets:
        name = DatasetSyntax.parse(entry).dataset  # swift's own syntax: path_or_id[:subset][#count]
        is_file = name.lower().endswith(_FILE_SUFFIXES) or name.startswith(("/", "./", "../", "~"))
        if (is_file or name.count("/") > 1) and not os.path.exists(os.path.expanduser(name)):
            raise PluginUsageError(
                f"--dataset {entry!r}: no such file or folder {name!r} (relative paths start at {Path.cwd()}). "
                "Fix: check the path (hub datasets are named owner/name, e.g. AI-ModelScope/LaTeX_OCR)"
            )


def tag_report(config: LinguDistillConfig, datasets: list[str], num_proc: int = 1) -> TagReport:
    """Load ``datasets`` as ``swift sft --dataset`` would, tagged as training will tag them, and count."""
    from swift.dataset import load_dataset

    with tagging(config, num_proc=num_proc) as tagger:
        train, _ = load_dataset(datasets, split_dataset_ratio=0.0, num_proc=num_proc, shuffle=False)
    report = TagReport()
    for index, row in enumerate(train):
        _, decision = decode_channel(row.get("channel"))  # exactly what the loss will read
        _, unknown = tagger.explain(row, index)  # the category name, when it was not in the map
        report.add(decision, unknown)
    return report
