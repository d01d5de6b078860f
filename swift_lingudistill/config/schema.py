"""The plugin's configuration schema: one pydantic model, every field and every rule between fields stated once.

Whatever else needs a rule reads it from here: the loss validates its options with ``LossConfig``, the README's
table is tested against these fields, the CLI prints their defaults.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .tagging_defaults import DEFAULT_CATEGORIES, DEFAULT_VISION_PATTERNS, normalize_category, parse_weight

__all__ = [
    "DIVERGENCES",
    "JSD_DEFAULT_BETA",
    "SELF_TEACHER",
    "Divergence",
    "KVShareConfig",
    "LinguDistillConfig",
    "LossConfig",
    "MonitorConfig",
    "PreflightConfig",
    "TaggingConfig",
    "TeacherConfig",
]

SELF_TEACHER = "self"
Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)
JSD_DEFAULT_BETA = 0.5  # the symmetric mixture, as TRL's generalized JSD defaults to


def _weight_field(value: Any) -> float:
    """A weight field's value, or the error pydantic reports with the field's name."""
    weight = parse_weight(value)
    if weight is None:
        raise ValueError("a weight must be true/false, distill/no_distill/vision, or a number in [0, 1]")
    return weight


class _Section(BaseModel):
    # allow_inf_nan=False: `lambda: .nan` fails as "not a finite number", not against a bound it cannot compare to
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_blank_strings(cls, value: Any) -> Any:
        """A blank string (``"   "``) is never a value the user meant; every string field refuses it."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is blank (empty or only spaces); write a value or remove the key")
        return value


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
    trust_remote_code: bool = Field(
        default=False,
        description="run Python code shipped with the teacher checkpoint (an `auto_map` in its config.json or "
        "tokenizer_config.json); without it such a teacher is refused before any of its code runs",
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
    rebase_rotary: bool = Field(
        default=True,
        description="when the teacher's rotary base (or a fixed rope scaling) differs from the student's and the "
        "rest of the lineage matches (Qwen3-VL with Qwen3, SmolVLM with SmolLM2), re-base the shared keys exactly: "
        "turn them back at the student's frequencies and forward at the teacher's, at the same positions; false "
        "refuses such a teacher",
    )


class LossConfig(_Section):
    """The distillation term added to (or replacing part of) cross-entropy."""

    divergence: Divergence = Field(
        default="forward_kl", description="forward_kl = KL(teacher||student), reverse_kl, or generalized jsd"
    )
    beta: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="jsd interpolation in [0, 1] (0 = forward KL, 1 = reverse KL); only with divergence jsd, "
        f"default {JSD_DEFAULT_BETA}",
    )
    temperature: float = Field(default=1.0, gt=0.0, le=100.0, description="softmax temperature tau in (0, 100]")
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
    fused_linear: bool = Field(
        default=True,
        description="compute CE and distillation from the student's final hidden states and output layer, chunk "
        "by chunk, so its [tokens x vocab] logits never exist; false keeps the logits path (the reference)",
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> LossConfig:
        if self.beta is not None and self.divergence != "jsd":
            raise ValueError(f"loss.beta only applies to divergence jsd (got divergence {self.divergence}); remove it")
        if self.divergence == "jsd" and self.beta is None:
            self.beta = JSD_DEFAULT_BETA
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


class PreflightConfig(_Section):
    """What is checked before the student loads, and how many bad rows a run may carry."""

    max_rows: int | None = Field(
        default=1000,
        ge=1,
        description="rows of each local dataset file checked before the model loads (tags, images, token "
        "length, in file order); null checks every row",
    )
    max_bad_rows: int = Field(
        default=0,
        ge=0,
        description="rows swift may drop (longer than --max_length) or replace (an unreadable image, a row its "
        "template cannot encode) before the run stops, in the pre-flight and during training (per process)",
    )
    teacher_weights: bool = Field(
        default=True,
        description="read the teacher's safetensors tensor by tensor before training and refuse NaN or "
        "infinite values (the student's own checkpoint for `model: self`)",
    )


class LinguDistillConfig(_Section):
    """The whole plugin configuration (one YAML file)."""

    teacher: TeacherConfig
    kv_share: KVShareConfig = Field(default_factory=KVShareConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    tagging: TaggingConfig = Field(default_factory=TaggingConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)
    # 'section.field' -> the `${VAR}` text it was read from: logs and saved files show that text, never the value
    _env_refs: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def env_refs(self) -> dict[str, str]:
        """Which fields came from environment variables, as ``{'teacher.model': '${LINGUDISTILL_TEACHER}'}``."""
        return dict(self._env_refs)

    def remember_env_refs(self, refs: dict[str, str]) -> LinguDistillConfig:
        """Record where ``${VAR}`` values came from (set by the loader; copies keep it)."""
        self._env_refs = dict(refs)
        return self
