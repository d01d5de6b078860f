"""The plugin's configuration: one pydantic model, every field declared once, loaded from YAML.

`swift sft` cannot take new flags (arguments are parsed before plugins load), so the config travels the
way swift passes plugin knobs: the ``LINGUDISTILL_CONFIG`` environment variable, set from the shell, from a
swift YAML config's ``ENV:`` block, or with ``--model_kwargs '{"lingudistill_config": "..."}'``.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CATEGORIES",
    "DEFAULT_VISION_PATTERNS",
    "ConfigError",
    "KVShareConfig",
    "LinguDistillConfig",
    "LossConfig",
    "MonitorConfig",
    "TaggingConfig",
    "TeacherConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
    "normalize_category",
    "parse_weight",
]

CONFIG_ENV = "LINGUDISTILL_CONFIG"
SELF_TEACHER = "self"

# The paper's split (METHOD.md): language-heavy kinds of data are distilled, vision-heavy ones are not.
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


def _weight_field(value: Any) -> float:
    weight = parse_weight(value)
    if weight is None:
        raise ValueError("a weight must be true/false, distill/no_distill/vision, or a number in [0, 1]")
    return weight


def normalize_category(name: str) -> str:
    """Category names match case-insensitively, with spaces and hyphens read as underscores."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


class TeacherConfig(_Section):
    """Which frozen text-only LM teaches the student."""

    model: str = Field(
        description="hub id or local path of the text-only LM the VLM's language model was built from "
        "(e.g. Qwen/Qwen2.5-7B-Instruct for Qwen2.5-VL-7B-Instruct), or `self` for a frozen snapshot of the "
        "student's own language model at the start of training",
        min_length=1,
    )
    model_type: str | None = Field(
        default=None,
        description="ms-swift model_type of the teacher (e.g. qwen2_5); inferred from the checkpoint when "
        "omitted. It is never the student's model_type",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="teacher weights' dtype; auto uses the student's dtype"
    )
    offload: bool = Field(
        default=False,
        description="keep the teacher's weights in CPU memory and bring them to the accelerator only for its "
        "forward (less accelerator memory, more transfer time); under DeepSpeed ZeRO-3, parameter offload",
    )

    @property
    def is_self(self) -> bool:
        return self.model.strip().lower() == SELF_TEACHER

    @model_validator(mode="after")
    def _self_has_no_checkpoint_options(self) -> TeacherConfig:
        if self.is_self and self.model_type is not None:
            raise ValueError(
                "teacher.model_type does not apply to `model: self` (the teacher is the student's own language "
                "model); remove teacher.model_type"
            )
        return self


class KVShareConfig(_Section):
    """Which of the student's keys/values the teacher's attention reads at every layer."""

    scope: Literal["image", "prompt", "all", "none"] = Field(
        default="image",
        description="positions whose K/V come from the student: image (vision tokens), prompt (every "
        "non-response position), all, or none (an ablation: the teacher is blind to the image; vision "
        "positions are masked out of its attention and it reads the text alone)",
    )
    detach: bool = Field(
        default=True,
        description="treat the shared K/V as constants; false lets the distillation gradient flow through "
        "the teacher into the student's K/V (needs non-reentrant or no gradient checkpointing)",
    )


class LossConfig(_Section):
    """The distillation term added to (or replacing part of) cross-entropy."""

    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        default="forward_kl", description="forward_kl = KL(teacher||student), reverse_kl, or generalized jsd"
    )
    beta: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="jsd interpolation in [0, 1] (0 = forward KL, 1 = reverse KL); only with divergence jsd, "
        "default 0.5",
    )
    temperature: float = Field(default=1.0, gt=0.0, le=100.0, description="softmax temperature tau > 0")
    lambda_: float = Field(
        default=1.0, alias="lambda", ge=0.0, le=1000.0, description="weight of the distillation term (>= 0)"
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        description="keep only the teacher's k most likely tokens, renormalised; forward_kl only",
    )
    mode: Literal["add", "replace"] = Field(
        default="add",
        description="add: CE + lambda*KD; replace: on distilled samples (1 - alpha*w)*CE + alpha*w*lambda*KD",
    )
    alpha: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of CE the distillation term replaces; mode replace only"
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> LossConfig:
        if self.beta is not None and self.divergence != "jsd":
            raise ValueError(f"loss.beta only applies to divergence jsd (got divergence {self.divergence}); remove it")
        if self.divergence == "jsd" and self.beta is None:
            self.beta = 0.5
        if self.top_k is not None and self.divergence != "forward_kl":
            raise ValueError(
                f"loss.top_k needs divergence forward_kl (got {self.divergence}): reverse KL and JSD need the "
                "teacher's probability wherever the student has mass; remove top_k or use forward_kl"
            )
        if self.mode == "replace" and self.alpha is None:
            raise ValueError("loss.mode replace needs loss.alpha in [0, 1] (e.g. alpha: 0.5)")
        if self.mode == "add" and self.alpha is not None:
            raise ValueError("loss.alpha only applies to mode replace; remove alpha or set mode: replace")
        return self


class TaggingConfig(_Section):
    """How each sample's distillation weight w in [0, 1] is decided (first rule that applies wins)."""

    default: float = Field(
        default=1.0, description="weight when no other rule decides: distill (1), no_distill (0) or a number"
    )
    explicit_field: str | None = Field(
        default="distill",
        description="per-row field with an explicit decision (true/false or a number in [0, 1]); null disables",
    )
    category_fields: list[str] = Field(
        default_factory=lambda: ["category"],
        description="per-row fields naming the sample's category; the first present one is looked up in categories",
    )
    categories: dict[str, float] = Field(
        default_factory=dict,
        description="category -> weight, merged over the built-in paper split (captioning, knowledge, science, "
        "vqa, text -> distill; ocr, document, chart, table, screen_to_code, grounding, counting -> no_distill)",
    )
    unknown_category: Literal["default", "rules", "error"] = Field(
        default="default",
        description="a category not in the map: use the default weight, continue to the rules, or stop with an error",
    )
    datasets: dict[str, float] = Field(
        default_factory=dict,
        description="glob on where a row came from as swift resolves its --dataset entry (a hub id such as "
        "AI-ModelScope/LaTeX_OCR, or a file path) -> weight, e.g. '*OCR*': no_distill; tags whole registered "
        "datasets without rewriting them",
    )
    no_image: float | None = Field(
        default=1.0, description="weight of a sample without images or videos (language-heavy); null disables"
    )
    vision_patterns: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_VISION_PATTERNS),
        description="name -> case-insensitive regex on the user turns; a match marks the sample vision-heavy "
        "(weight 0)",
    )

    @field_validator("default", "no_image", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> Any:
        return None if value is None else _weight_field(value)

    @field_validator("categories", "datasets", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {str(k): _weight_field(v) for k, v in value.items()}

    @field_validator("vision_patterns")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"vision_patterns.{name} is not a valid regular expression ({e})") from None
        return value

    def category_weights(self) -> dict[str, float]:
        """The effective category map: the paper's split with the user's entries on top, names normalised."""
        merged = {normalize_category(k): v for k, v in DEFAULT_CATEGORIES.items()}
        merged.update({normalize_category(k): v for k, v in self.categories.items()})
        return merged


class MonitorConfig(_Section):
    """The language-retention monitor (``--callbacks lingudistill_monitor``): measured at each evaluation."""

    dataset: str | None = Field(
        default=None,
        description="held-out text-only JSONL (swift's messages format) on which the student's perplexity and "
        "the teacher-student KL are measured; required by --callbacks lingudistill_monitor",
    )
    max_samples: int = Field(default=64, ge=1, le=100_000, description="rows of that set to use (the first ones)")
    batch_size: int = Field(default=8, ge=1, le=1024, description="rows per forward while measuring")
    plot: bool = Field(default=True, description="write lingudistill_language.png (lang_ppl, lang_kl) at the end")


class LinguDistillConfig(_Section):
    """The whole plugin configuration (one YAML file)."""

    teacher: TeacherConfig
    kv_share: KVShareConfig = Field(default_factory=KVShareConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    tagging: TaggingConfig = Field(default_factory=TaggingConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)


class ConfigError(ValueError):
    """A config that cannot be used, with every problem named: the field, the value, why, and the fix."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` in strings by the environment variable; an unset variable is an error, not ''."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append(
                    f"{where} = {value!r}: environment variable {name} is not set. "
                    f"Fix: export {name}=... before running, or write the value into the config"
                )
                return match.group(0)
            return os.environ[name]

        return _ENV_REF.sub(sub, value)
    return value


def _section_model(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = LinguDistillConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            # also accept aliases such as `lambda`
            field = next((f for f in model.model_fields.values() if f.alias == part), None)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return model
    return model


def _field_hint(loc: tuple) -> str:
    section = _section_model(loc[:-1]) if loc else None
    if section is None or not loc:
        return ""
    for key, field in section.model_fields.items():
        if (key == loc[-1] or field.alias == loc[-1]) and field.description:
            return f"Expected: {field.description}."
    return ""


_MISSING_FIXES = {
    ("teacher",): "Fix: add a teacher section, e.g.\n      teacher:\n        model: Qwen/Qwen2.5-7B-Instruct  "
    "# the text-only LM the VLM was built from, or `self`",
    ("teacher", "model"): "Fix: set teacher.model to the hub id or local path of the text-only LM the VLM was "
    "built from, or to `self`",
}


def format_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's errors into one message per problem: field, value, why, fix."""
    lines = [f"Invalid LinguDistill config {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            section = _section_model(loc[:-1])
            valid = sorted((f.alias or k) for k, f in section.model_fields.items()) if section else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            did_you_mean = f" (did you mean `{close[0]}`?)" if close else ""
            lines.append(
                f"  - {path}: unknown key{did_you_mean}. Fix: remove it; "
                f"{'.'.join(map(str, loc[:-1])) or 'the top level'} accepts: {', '.join(valid)}"
            )
        elif kind == "missing":
            fix = _MISSING_FIXES.get(loc) or _field_hint(loc)
            lines.append(f"  - {path}: required but missing. {fix}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            value = item.get("input")
            shown = f" = {value!r}" if not isinstance(value, dict) else ""
            lines.append(f"  - {path}{shown}: {message}. {_field_hint(loc)}".rstrip())
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<dict>") -> LinguDistillConfig:
    """Validate a parsed config, expanding ``${VAR}`` references, or raise ConfigError."""
    if data is None:
        raise ConfigError(f"LinguDistill config {source} is empty. Fix: start from plugin_configs/selective.yaml")
    if not isinstance(data, dict):
        raise ConfigError(
            f"LinguDistill config {source} must be a mapping of sections (teacher, kv_share, loss, tagging), "
            f"got {type(data).__name__}"
        )
    problems: list[str] = []
    data = _expand_env(data, "", problems)
    if problems:
        raise ConfigError(f"Invalid LinguDistill config {source}:\n" + "\n".join(f"  - {p}" for p in problems))
    try:
        return LinguDistillConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | os.PathLike) -> LinguDistillConfig:
    """Read and validate a YAML config file; every problem is reported with its fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"LinguDistill config file {str(path)!r} does not exist (from {CONFIG_ENV} or the command line). "
            "Fix: point it at a YAML file, e.g. plugin_configs/selective.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"LinguDistill config {path} is not valid YAML: {e}") from None
    return config_from_dict(data, str(path))


def dump_config(config: LinguDistillConfig) -> str:
    """The resolved config (defaults filled in) as YAML, as written next to swift's args.json."""
    data = config.model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
