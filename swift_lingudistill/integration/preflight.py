"""The pre-flight: what the plugin can know before the student's weights load, checked in one pass.

``activation`` runs it after the config, the flags and the teacher's configs are accepted; ``tag_report`` runs
the same scan. It reads the teacher's weights tensor by tensor (finite), and each local dataset file as a
stream, up to ``preflight.max_rows`` rows in file order: tags, image files, token lengths under the run's own
template (the student's processor is loaded for it, never its weights), an empty file. More bad rows than
``preflight.max_bad_rows`` stop the run with their file and line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config import LinguDistillConfig, displayed_value
from ..preflight import PreflightError, ScanResult, bad_rows_error, nonfinite_tensors, read_rows, scan_rows
from ..tagging import Tagger
from .dataset_scan import DatasetEntry, dataset_entries, length_meter, standardizer
from .run_state import RunState
from .teacher_resolution import student_dir

__all__ = ["check_teacher_weights", "run_preflight", "scan_datasets", "student_template"]

_PROCESSORS: dict[tuple, Any] = {}  # one per student folder: the tests start many runs in one process


def run_preflight(state: RunState) -> list[ScanResult]:
    """Teacher weights, then every dataset entry; raises PreflightError with the file, line and fix."""
    from swift.utils import get_logger

    args, config = state.args, state.config
    check_teacher_weights(state)
    entries = dataset_entries(list(args.dataset or []) + list(getattr(args, "val_dataset", None) or []),
                              getattr(args, "use_hf", None))  # fmt: skip
    measure = None
    if any(e.path is not None for e in entries):
        measure = length_meter(student_template(args), args.max_length, getattr(args, "truncation_strategy", None))
    results = scan_datasets(entries, state.tagger, config, measure, args.max_length, getattr(args, "columns", None))
    error = bad_rows_error(results, config.preflight.max_bad_rows, args.max_length)
    if error is not None:
        raise error
    if any(r.bad for r in results):
        get_logger().warning(
            f"LinguDistill pre-flight: {sum(len(r.bad) for r in results)} checked row(s) will not train as "
            f"written, within preflight.max_bad_rows ({config.preflight.max_bad_rows}); they count in bad_rows."
        )
    if getattr(args, "packing", False) or getattr(args, "streaming", False):
        get_logger().warning(
            "LinguDistill: with --packing or --streaming swift encodes rows outside its lazy dataset, so rows it "
            "drops while training are not counted in bad_rows; --strict true makes swift stop on them."
        )
    return results


def scan_datasets(
    entries: list[DatasetEntry],
    tagger: Tagger,
    config: LinguDistillConfig,
    measure: Any,
    max_length: int | None,
    columns: dict | None = None,
    limit: int | str | None = "config",
) -> list[ScanResult]:
    """Scan each entry that is a local JSONL/JSON file and log one line each; raise on tags or an empty file
    (the caller judges the bad rows). ``limit`` defaults to ``preflight.max_rows`` (None: every row)."""
    from swift.utils import get_logger

    logger = get_logger()
    limit = config.preflight.max_rows if limit == "config" else limit
    results = []
    for entry in entries:
        standardize = standardizer(entry, columns) if entry.path is not None else None
        if standardize is None:
            why = entry.note or "it has its own preprocessor"
            logger.info(
                f"LinguDistill pre-flight: {entry.given} not read before training ({why}): swift tags it while "
                "loading, and rows it drops or replaces count in bad_rows."
            )
            continue
        rows = read_rows(entry.path, None if limit is None else limit + 1)
        result = scan_rows(rows, entry.given, tagger, limit=limit, standardize=standardize, measure=measure,
                           max_length=max_length)  # fmt: skip
        if result.rows == 0:
            size = entry.path.stat().st_size
            raise PreflightError(
                f"--dataset {entry.given!r} holds no rows ({size} bytes): training would stop after the model "
                "loaded, on an empty dataset. Fix: point it at your data (one JSON object per line, swift's "
                "messages format)"
            )
        logger.info(f"LinguDistill pre-flight: {result.summary()}")
        results.append(result)
    return results


def student_template(args: Any) -> Any:
    """The run's own template (swift's flags), in train mode, measuring with no length limit of its own."""
    folder = student_dir(args)
    stamp = max((p.stat().st_mtime for p in Path(folder).iterdir() if p.is_file()), default=0.0)
    key = (str(folder), getattr(args, "model_type", None), stamp)
    if key not in _PROCESSORS:
        _PROCESSORS.clear()
        _PROCESSORS[key] = args.get_model_processor(load_model=False)[1]
    template = args.get_template(_PROCESSORS[key])
    template.set_mode("train")
    template.max_length = None  # the pre-flight compares the real length to --max_length itself
    return template


def check_teacher_weights(state: RunState) -> None:
    """Every floating-point tensor of the teacher's safetensors is finite (the student's own for ``self``).

    A teacher holding NaN would skip distillation on every batch: the run would be plain fine-tuning.
    """
    from swift.utils import get_logger

    config, logger = state.config, get_logger()
    if not config.preflight.teacher_weights:
        logger.info("LinguDistill pre-flight: teacher weights not read (preflight.teacher_weights: false)")
        return
    folder = state.teacher_dir or student_dir(state.args)
    shown = displayed_value(config, "teacher.model", folder) if state.teacher_dir else str(folder)
    start = time.perf_counter()
    read, bad = nonfinite_tensors(folder)
    if not read:
        logger.info(f"LinguDistill pre-flight: teacher weights not read before training ({shown} holds no "
                    "*.safetensors yet); they are read when the teacher loads")  # fmt: skip
        return
    if bad:
        listed = "\n".join(f"  - {b}" for b in bad)
        whose = "teacher" if state.teacher_dir else "student (the `self` teacher)"
        raise PreflightError(
            f"The {whose}'s weights in {shown} hold NaN or infinite values:\n{listed}\nDistillation from it would be "
            "skipped on every batch, so the run would be plain fine-tuning. Fix: point teacher.model at an intact "
            "checkpoint (download or convert it again), or set `preflight: {teacher_weights: false}` to skip "
            "this check"
        )
    logger.info(f"LinguDistill pre-flight: teacher weights finite ({read} tensors of {shown} read in "
                f"{time.perf_counter() - start:.1f} s; preflight.teacher_weights)")  # fmt: skip
