"""One pass over a dataset's rows: the tag each gets, and every row swift would drop or replace while training.

swift (``--strict false``, its default) deletes a row its preprocessor rejects while loading, drops a row longer
than ``--max_length`` without a word, and replaces a row whose images cannot be read (or that its template
cannot encode) by another random row. Each of those rows silently changes what trains, and a dropped distilled
row changes what is distilled. The scan finds them before the model loads, with their file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..tagging import Tagger, TaggingError, TagReport
from .images import check_images
from .rows import PreflightError

__all__ = ["BadRow", "RowTooLong", "ScanResult", "bad_rows_error", "scan_rows"]

_SHOWN = 8  # bad rows listed in a message; the rest are counted
_TAG_ERRORS = 10  # tag problems collected before the scan stops


class RowTooLong(ValueError):
    """Raised by a measuring function for a row longer than the run's limit (carries the length)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"{length} tokens")
        self.length = length


@dataclass(frozen=True)
class BadRow:
    """A row swift would not train on as written: where it is, why, and the weight it would have had."""

    where: str  # "/data/x.jsonl line 4"
    reason: str  # "5123 tokens, longer than --max_length 4096: swift drops it"
    weight: float | None  # its distillation weight (None when it could not be tagged)


@dataclass
class ScanResult:
    """What one dataset's checked rows hold."""

    source: str
    limit: int | None  # the cap the scan ran under (None: every row)
    rows: int = 0  # rows read
    more: bool = False  # rows left unread beyond the cap
    report: TagReport = field(default_factory=TagReport)  # the rows that will train
    bad: list[BadRow] = field(default_factory=list)
    longest: int = 0  # token length of the longest measured row
    measured: bool = False  # token lengths were checked

    @property
    def bad_distilled(self) -> int:
        return sum(1 for b in self.bad if b.weight is not None and b.weight > 0)

    def summary(self) -> str:
        """One line for the log: how much was checked, what will not train, the distilled share."""
        scope = f"the first {self.rows} rows (preflight.max_rows: {self.limit}; null checks every row)" if (
            self.more) else f"all {self.rows} rows"  # fmt: skip
        checks = "tags, images" + (", token lengths" if self.measured else "")
        line = f"{self.source}: checked {scope}: {checks}."
        if self.bad:
            line += f" {len(self.bad)} will not train as written ({self.bad_distilled} of them distilled)."
        trained = self.report
        line += f" Distilled: {trained.distilled} of {trained.rows} rows that train ({trained.distill_share:.1%})."
        return line


Measure = Callable[[dict[str, Any]], int]
Standardize = Callable[[dict[str, Any]], list[dict[str, Any]]]


def scan_rows(
    rows: Iterable[tuple[str, dict[str, Any]]],
    source: str,
    tagger: Tagger,
    *,
    limit: int | None = None,
    standardize: Standardize | None = None,
    measure: Measure | None = None,
    max_length: int | None = None,
) -> ScanResult:
    """Tag, check the images of and (with ``measure``) measure each row; rows beyond ``limit`` are not read.

    ``rows`` yields (position, row) with position such as 'line 4'; ``standardize`` turns a file row into the
    rows swift's preprocessor makes of it (an empty list: swift deletes it); ``measure`` returns a row's token
    length (raising ``RowTooLong`` when swift would drop it, anything else when its template cannot encode it).
    Tag errors stop the scan, several at once.
    """
    result = ScanResult(source=source, limit=limit, measured=measure is not None)
    tag_errors: list[str] = []
    for position, raw in rows:
        if limit is not None and result.rows >= limit:
            result.more = True
            break
        result.rows += 1
        where = f"{source} {position}"
        try:
            converted = standardize(raw) if standardize else [raw]
        except Exception as e:  # swift's preprocessors raise AssertionError, ValueError, KeyError...
            result.bad.append(BadRow(where, f"swift's preprocessor rejects it ({_brief(e)}): swift deletes it", None))
            continue
        if not converted:
            result.bad.append(BadRow(where, "swift's preprocessor makes no row of it: swift deletes it", None))
            continue
        for row in converted:
            try:
                decision, unknown = tagger.explain(row)
            except TaggingError as e:
                tag_errors.append(f"{where}: {e.detail}")
                if len(tag_errors) >= _TAG_ERRORS:
                    break
                continue
            problem = _problem(row, measure, max_length, result)
            if problem:
                result.bad.append(BadRow(where, problem, decision.weight))
            else:
                result.report.add(decision, unknown)
        if len(tag_errors) >= _TAG_ERRORS:
            break
    if tag_errors:
        more = " (the first ten; the scan stopped there)" if len(tag_errors) >= _TAG_ERRORS else ""
        raise PreflightError(f"LinguDistill cannot tag these rows{more}:\n" + "\n".join(f"  - {t}" for t in tag_errors))
    return result


def _problem(row: dict[str, Any], measure: Measure | None, max_length: int | None, result: ScanResult) -> str | None:
    """Why swift would not train on this row as written, or None."""
    unreadable = check_images(row)
    if unreadable:
        return "; ".join(unreadable) + ": swift would train on another random row instead"
    if measure is None:
        return None
    try:
        length = measure(row)
    except RowTooLong as e:
        result.longest = max(result.longest, e.length)
        return f"{e.length} tokens, longer than --max_length {max_length}: swift drops it without a word"
    except Exception as e:  # the template's own errors have many types
        return f"swift's template cannot encode it ({_brief(e)}): swift would train on another random row instead"
    result.longest = max(result.longest, length)
    return None


def _brief(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def bad_rows_error(results: list[ScanResult], allowed: int, max_length: int | None) -> PreflightError | None:
    """The error that stops the run when the scan found more bad rows than ``preflight.max_bad_rows`` allows."""
    bad = [b for r in results for b in r.bad]
    if len(bad) <= allowed:
        return None
    listed = "\n".join(f"  - {b.where}: {b.reason}{_weight_note(b)}" for b in bad[:_SHOWN])
    if len(bad) > _SHOWN:
        listed += f"\n  - ... and {len(bad) - _SHOWN} more"
    before = sum(r.report.distilled for r in results) + sum(r.bad_distilled for r in results)
    total = sum(r.report.rows for r in results) + len(bad)
    after = sum(r.report.distilled for r in results)
    trained = sum(r.report.rows for r in results)
    effect = (
        f"Effect: {before} of {total} checked rows are distilled as written; {after} of the {trained} that would train."
    )
    fixes = ["repair or remove these rows"]
    longest = max((r.longest for r in results), default=0)
    if any("--max_length" in b.reason for b in bad):
        fixes.append(
            f"raise --max_length (the longest checked row has {longest} tokens, the limit is {max_length}) or "
            "pass --truncation_strategy right to truncate instead of dropping"
        )
    fixes.append(f"or allow them with `preflight: {{max_bad_rows: {len(bad)}}}` in the plugin config")
    return PreflightError(
        f"LinguDistill pre-flight: {len(bad)} row(s) of the data would not train as written, more than "
        f"preflight.max_bad_rows ({allowed}) allows:\n{listed}\n{effect}\nFix: {'; '.join(fixes)}. (swift's own "
        "--strict true stops at the first such row instead of dropping or replacing it.)"
    )


def _weight_note(bad: BadRow) -> str:
    return " [a distilled row]" if bad.weight is not None and bad.weight > 0 else ""
