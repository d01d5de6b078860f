"""``tag-report``: how many rows each tagging rule decides, through swift's own dataset loading."""

from __future__ import annotations

from ..config import LinguDistillConfig
from ..tagging import TagReport, decode_channel
from .dataset_tagging import tagging

__all__ = ["tag_report"]


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
