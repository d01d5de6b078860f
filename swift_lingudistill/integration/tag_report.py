"""``tag-report``: how many rows each tagging rule decides, after the same checks training runs first.

Local JSONL/JSON files go through the pre-flight's scan (every row unless ``max_rows`` says otherwise): the
same tags, the same image checks and, given the student (``model``), the same token lengths, so rows swift
will drop or replace are not counted as trained or distilled. Other entries (hub or registered datasets that
are not local files) load through swift's own loader and are tagged exactly as training tags them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import LinguDistillConfig
from ..preflight import PreflightError, ScanResult, bad_rows_error
from ..tagging import Tagger, TagReport, decode_channel
from .dataset_scan import dataset_entries, length_meter
from .dataset_tagging import extend_dataset_columns, tagging
from .preflight import scan_datasets
from .run_state import PluginUsageError

__all__ = ["TagReportResult", "check_dataset_names", "tag_report"]

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


@dataclass
class TagReportResult:
    """The rows that will train, per rule; what the checks found; the verdict training would reach."""

    report: TagReport
    scans: list[ScanResult] = field(default_factory=list)
    error: PreflightError | None = None  # training would stop before the model loads, with this message
    max_length: int | None = None

    def format(self, title: str = "") -> str:
        lines = [self.report.format(title)]
        for scan in self.scans:
            lines.append(f"checked: {scan.summary()}")
            lines += [f"  not trained: {b.where}: {b.reason}" for b in scan.bad[:20]]
            if len(scan.bad) > 20:
                lines.append(f"  ... and {len(scan.bad) - 20} more")
        if self.scans and not any(s.measured for s in self.scans):
            lines.append("token lengths not checked: pass --model (and --max_length) as for `swift sft`")
        return "\n".join(lines)


def tag_report(
    config: LinguDistillConfig,
    datasets: list[str],
    num_proc: int = 1,
    *,
    model: str | None = None,
    model_type: str | None = None,
    template: str | None = None,
    max_length: int | None = None,
    max_rows: int | None = None,
) -> TagReportResult:
    """Check and count ``datasets`` as ``swift sft --dataset`` would train on them.

    ``model`` (and ``model_type`` / ``template`` / ``max_length`` as on the ``swift sft`` command line) lets
    the report measure token lengths; ``max_rows`` caps the rows read per local file (None: every row).
    """
    extend_dataset_columns(config)
    tagger = Tagger(config.tagging)
    entries = dataset_entries(datasets)
    measure = None
    if model is not None and any(e.path is not None for e in entries):
        built, max_length = _template(model, model_type, template, max_length)
        measure = length_meter(built, max_length, "delete")
    scans = scan_datasets(entries, tagger, config, measure, max_length, limit=max_rows)
    report = TagReport()
    for scan in scans:
        report.merge(scan.report)
    others = [e.given for e in entries if e.path is None or not any(s.source == e.given for s in scans)]
    if others:
        report.merge(_loaded_report(config, others, num_proc))
    error = bad_rows_error(scans, config.preflight.max_bad_rows, max_length)
    return TagReportResult(report, scans, error, max_length)


def _template(model: str, model_type: str | None, template_type: str | None, max_length: int | None) -> Any:
    """swift's template for the student, from its processor only (no weights), and the run's --max_length."""
    from swift.model import get_model_processor
    from swift.template import get_template
    from swift.template.register import get_template_meta

    _, processor = get_model_processor(model, load_model=False, model_type=model_type, download_model=False)
    try:  # swift's own choice (args.json, the model's template, its single candidate)
        meta = get_template_meta(processor.model_info, processor.model_meta, template_type=template_type)
    except ValueError as e:
        raise PreflightError(f"--model {model}: {e} Fix: pass --template as for `swift sft`") from None
    template = get_template(processor, template_type=meta.template_type)
    template.set_mode("train")
    return template, max_length or processor.model_info.max_model_len


def _loaded_report(config: LinguDistillConfig, datasets: list[str], num_proc: int) -> TagReport:
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
