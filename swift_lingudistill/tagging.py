"""Selective distillation: every sample gets a weight w in [0, 1] and the name of the rule that chose it.

The paper distils the text-only teacher only into language-heavy samples; vision-heavy ones (OCR, charts,
tables, counting, grounding) train on cross-entropy alone. The decision is made once per row, before
tokenization, and travels to the loss inside ms-swift's ``channel`` column: it is the one per-sample field
that survives lazy tokenization, dataloader workers, packing and padding-free batching.

Plain Python on purpose (no ms-swift import): the CLI's ``tag-report`` and ``datasets.map(num_proc=...)``
both use it, and the latter pickles the :class:`Tagger`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import numbers
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .config import TaggingConfig, normalize_category, parse_weight

__all__ = [
    "CHANNEL_MARKER",
    "Decision",
    "TagReport",
    "Tagger",
    "TaggingError",
    "decode_channel",
    "encode_channel",
]

# Appended to the row's original channel; decode_channel splits on the last one.
CHANNEL_MARKER = "|ld="
# Written instead when the row had no channel at all, so None and "" both round-trip exactly.
_BARE_MARKER = "ld="
_EXPLICIT_FIX = "use true/false, distill/no_distill, or a number in [0, 1]"
_MEDIA_PART_TYPES = {"image", "image_url", "input_image", "video", "video_url", "input_video"}


class TaggingError(ValueError):
    """A row whose distillation weight cannot be decided, or a channel that carries no decision.

    ``detail`` is the message without the row's position, for callers that name it themselves (the pre-flight
    gives the file and line).
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = message if detail is None else detail


@dataclass(frozen=True)
class Decision:
    """The distillation weight of one sample and the rule that decided it (for reports and debugging)."""

    weight: float
    rule: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"a distillation weight must be in [0, 1], got {self.weight!r} (rule {self.rule!r})")


def _where(row: dict, index: int | None) -> str:
    """'row 12 of /data/x.jsonl', counting from 1 in the order swift loaded the rows (a JSONL's line when it
    has no blank line): enough for the user to find the offending sample."""
    name = "row" if index is None else f"row {index + 1}"
    source = row.get("dataset")
    return f"{name} of {source}" if source else name


def _has_media(value: Any) -> bool:
    """True when an images/videos value holds at least one real item (not None, '', [] or an all-None dict)."""
    if value is None:
        return False
    if isinstance(value, (str, bytes)):
        return bool(value.strip())
    if isinstance(value, dict):
        return any(v is not None and v != "" and v != b"" for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_media(item) for item in value)
    return True  # e.g. a PIL image


def _user_text_and_media(row: dict) -> tuple[str, bool]:
    """The user turns' text joined by newlines, and whether any message carries an image/video part."""
    messages = row.get("messages")
    if not messages:
        query = row.get("query")
        return (query if isinstance(query, str) else ""), False
    texts: list[str] = []
    media = False
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        is_user = message.get("role") == "user"
        if isinstance(content, str):
            if is_user:
                texts.append(content)
            continue
        for part in content or ():
            if isinstance(part, str):
                if is_user:
                    texts.append(part)
            elif isinstance(part, dict):
                if part.get("type") in _MEDIA_PART_TYPES:
                    media = True
                elif is_user and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return "\n".join(texts), media


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, dict)):
        return not value
    return False


class Tagger:
    """Decides each row's weight from a :class:`TaggingConfig`; regexes and globs are compiled once."""

    def __init__(self, config: TaggingConfig) -> None:
        self.config = config
        self._categories = config.category_weights()
        self._datasets = [
            (glob, re.compile(fnmatch.translate(glob), re.IGNORECASE), weight)
            for glob, weight in config.datasets.items()
        ]
        self._vision = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in config.vision_patterns.items()]

    def decide(self, row: dict, index: int | None = None) -> Decision:
        """The row's weight and rule (explicit > category > dataset > no_image > vision > default)."""
        return self.explain(row, index)[0]

    def explain(self, row: dict, index: int | None = None) -> tuple[Decision, str | None]:
        """Like :meth:`decide`, plus the row's normalised category when it was not in the map (for reports)."""
        cfg = self.config
        if cfg.explicit_field is not None and row.get(cfg.explicit_field) is not None:
            return self._explicit(row, index), None

        unknown: str | None = None
        for field in cfg.category_fields:
            value = row.get(field)
            if _is_empty(value):
                continue
            category = normalize_category(value)
            if category in self._categories:
                return Decision(self._categories[category], f"category:{category}"), None
            if cfg.unknown_category == "error":
                known = ", ".join(sorted(self._categories))
                detail = (
                    f"{field} = {value!r} is not a known category ({category!r}). Known categories: {known}. "
                    "Fix: add it under tagging.categories with a weight, or set tagging.unknown_category to "
                    "default or rules"
                )
                raise TaggingError(f"{_where(row, index)}: {detail}", detail)
            if cfg.unknown_category == "default":
                return Decision(cfg.default, "unknown_category"), category
            unknown = category  # "rules": fall through, but remember it for the report
            break

        dataset = row.get("dataset")
        if isinstance(dataset, str) and dataset and self._datasets:
            basename = dataset.rstrip("/").rsplit("/", 1)[-1]
            for glob, regex, weight in self._datasets:
                if regex.match(dataset) or regex.match(basename):
                    return Decision(weight, f"dataset:{glob}"), unknown

        text, media_parts = _user_text_and_media(row)
        has_media = media_parts or _has_media(row.get("images")) or _has_media(row.get("videos"))
        if not has_media and cfg.no_image is not None:
            return Decision(cfg.no_image, "no_image"), unknown
        for name, regex in self._vision:
            if regex.search(text):
                return Decision(0.0, f"vision:{name}"), unknown
        return Decision(cfg.default, "default"), unknown

    def _explicit(self, row: dict, index: int | None) -> Decision:
        field = self.config.explicit_field
        value = row[field]
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
            value = float(value)  # numpy scalars from Arrow-backed datasets
        weight = parse_weight(value)
        if weight is None:
            detail = f"field {field!r} has value {value!r}, which is not a distillation weight. Fix: {_EXPLICIT_FIX}"
            raise TaggingError(f"{_where(row, index)}: {detail}", detail)
        return Decision(weight, "explicit")

    def tag_row(self, row: dict, index: int | None = None) -> dict:
        """For ``datasets.map(with_indices=True)``: the row's new channel, its original kept in front.

        A row that is already tagged is re-tagged from its original channel, so tagging twice is harmless.
        """
        original = row.get("channel")
        if isinstance(original, str):
            with contextlib.suppress(TaggingError):
                original = decode_channel(original)[0]
        return {"channel": encode_channel(original, self.decide(row, index))}

    def __repr__(self) -> str:
        return f"Tagger({self.config!r})"


def encode_channel(original: str | None, decision: Decision) -> str:
    """``original|ld=<weight>;<rule>``, or ``ld=<weight>;<rule>`` without a channel; weights keep repr precision."""
    if CHANNEL_MARKER in decision.rule:
        raise ValueError(f"a rule name cannot contain {CHANNEL_MARKER!r}: {decision.rule!r}")
    tag = f"{float(decision.weight)!r};{decision.rule}"
    if original is None:
        return _BARE_MARKER + tag
    return f"{original}{CHANNEL_MARKER}{tag}"


def decode_channel(value: str | None) -> tuple[str | None, Decision]:
    """The original channel (None if the row had none) and the decision; the inverse of :func:`encode_channel`."""
    if isinstance(value, str):
        cut = value.rfind(CHANNEL_MARKER)
        if cut >= 0:
            original: str | None = value[:cut]
            tag = value[cut + len(CHANNEL_MARKER) :]
        elif value.startswith(_BARE_MARKER):
            original, tag = None, value[len(_BARE_MARKER) :]
        else:
            tag = None
        if tag is not None:
            weight_text, sep, rule = tag.partition(";")
            try:
                weight = float(weight_text)
                if sep:
                    return original, Decision(weight, rule)
            except ValueError:
                pass
    raise TaggingError(
        f"a sample reached training without a LinguDistill tag (channel = {value!r}): the tagging preprocessor did "
        "not run on it. This happens with --cached_dataset or a dataset tokenized before the plugin loaded. "
        "Fix: load the plugin (--external_plugins) for the run that preprocesses the data, or re-cache the dataset "
        "with the plugin loaded"
    )


class TagReport:
    """Counts of decisions by rule, for ``python -m swift_lingudistill tag-report``; mergeable across workers."""

    def __init__(self) -> None:
        self.rows = 0
        self.distilled = 0
        self.weight_sum = 0.0
        self._by_rule: Counter[str] = Counter()
        self._weight_by_rule: dict[str, float] = {}
        self._unknown: Counter[str] = Counter()

    def add(self, decision: Decision, unknown_category: str | None = None) -> None:
        self.rows += 1
        self.distilled += decision.weight > 0
        self.weight_sum += decision.weight
        self._by_rule[decision.rule] += 1
        self._weight_by_rule[decision.rule] = self._weight_by_rule.get(decision.rule, 0.0) + decision.weight
        if unknown_category is not None:
            self._unknown[unknown_category] += 1

    def merge(self, other: TagReport) -> None:
        self.rows += other.rows
        self.distilled += other.distilled
        self.weight_sum += other.weight_sum
        self._by_rule.update(other._by_rule)
        for rule, total in other._weight_by_rule.items():
            self._weight_by_rule[rule] = self._weight_by_rule.get(rule, 0.0) + total
        self._unknown.update(other._unknown)

    @property
    def mean_weight(self) -> float:
        return self.weight_sum / self.rows if self.rows else 0.0

    @property
    def distill_share(self) -> float:
        """Share of rows with w > 0, i.e. that the teacher distils into."""
        return self.distilled / self.rows if self.rows else 0.0

    def counts_by_rule(self) -> dict[str, int]:
        """Rows per rule, most frequent first."""
        return dict(self._by_rule.most_common())

    def unknown_categories(self) -> dict[str, int]:
        """Category names that were not in the map, with their row counts, most frequent first."""
        return dict(self._unknown.most_common())

    def format(self, title: str = "") -> str:
        """A plain-text table: rule, rows, share, mean weight; then totals, the distill share, unknown categories."""
        counts = self.counts_by_rule()
        width = max([len("rule"), len("total"), *map(len, counts)])
        lines = [title] if title else []
        lines.append(f"{'rule':<{width}}  {'rows':>8}  {'share':>7}  {'weight':>6}")
        lines.append("-" * (width + 33))
        for rule, n in counts.items():
            mean = self._weight_by_rule[rule] / n
            lines.append(f"{rule:<{width}}  {n:>8}  {n / self.rows:>7.1%}  {mean:>6.3f}")
        lines.append("-" * (width + 33))
        lines.append(f"{'total':<{width}}  {self.rows:>8}  {1.0 if self.rows else 0.0:>7.1%}  {self.mean_weight:>6.3f}")
        lines.append(f"distilled (w > 0): {self.distilled} of {self.rows} rows ({self.distill_share:.1%})")
        unknown = self.unknown_categories()
        if unknown:
            shown = ", ".join(f"{name} ({n})" for name, n in unknown.items())
            lines.append(f"unknown categories: {shown}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"TagReport(rows={self.rows}, distilled={self.distilled}, mean_weight={self.mean_weight:.3f})"
