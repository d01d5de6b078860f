"""The paper's split of data kinds and the words a distillation weight may be written with.

The tagging section of the schema uses these defaults; the tagger (``tagging.py``) reads rows with the same
weight parser, so a weight means one thing in the config and in the data.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DEFAULT_CATEGORIES", "DEFAULT_VISION_PATTERNS", "normalize_category", "parse_weight"]

# The paper's split (docs/METHOD.md, "Which samples are distilled"): language-heavy kinds of data are
# distilled, vision-heavy ones are not.
DEFAULT_CATEGORIES: dict[str, float] = {
    "captioning": 1.0,
    "caption": 1.0,
    "knowledge": 1.0,
    "science": 1.0,
    "general_vqa": 1.0,
    "vqa": 1.0,
    "text_only": 1.0,
    "text": 1.0,
    "language": 1.0,
    "ocr": 0.0,
    "document": 0.0,
    "documents": 0.0,
    "doc_vqa": 0.0,
    "chart": 0.0,
    "charts": 0.0,
    "table": 0.0,
    "tables": 0.0,
    "screen_to_code": 0.0,
    "grounding": 0.0,
    "counting": 0.0,
    "vision": 0.0,
}

# Case-insensitive regexes on the user turns that mark a sample as vision-heavy (not distilled).
DEFAULT_VISION_PATTERNS: dict[str, str] = {
    "reading_text": r"\b(read|transcribe|ocr|spell out|what is written|text in the (image|picture|photo)|"
    r"what does (the|this) (text|sign|label|note|caption) say)\b",
    "document": r"\b(document|invoice|receipt|pdf|screenshot|scanned|web ?page|slide)s?\b",
    "chart": r"\b(chart|graph|diagram|axis|axes|legend|bar (chart|graph)|pie chart|(line|scatter) plot|plotted)s?\b",
    "table": r"\b(spreadsheet|tabular|(convert|extract|parse|summari[sz]e|read) (the|this) table|in the table|"
    r"according to the table|the table (above|below|shows|lists)|(row|column|cell)s? (of|in) the table|"
    r"(first|second|third|last|\d+(st|nd|rd|th)) (row|column))\b",
    "counting": r"\b(how many|count|number of)\b",
    "grounding": r"(\b(bounding box(es)?|bbox|coordinates?|locate|localize|grounding)\b|<\|box_start\|>|<ref>)",
}

_WEIGHT_WORDS = {"distill": 1.0, "true": 1.0, "yes": 1.0, "no_distill": 0.0, "vision": 0.0, "false": 0.0, "no": 0.0}


def parse_weight(value: Any) -> float | None:
    """A distillation weight in [0, 1] from a bool, a number or a word (distill / no_distill / vision).

    Returns None when the value cannot be read as a weight; callers turn that into their own error.
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value) if 0.0 <= float(value) <= 1.0 else None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _WEIGHT_WORDS:
            return _WEIGHT_WORDS[word]
        try:
            number = float(word)
        except ValueError:
            return None
        return number if 0.0 <= number <= 1.0 else None
    return None


def normalize_category(name: str) -> str:
    """Category names match case-insensitively, with spaces and hyphens read as underscores."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())
