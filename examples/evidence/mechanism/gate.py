"""The gate, measured on the degraded student before any arm runs: does reading its image K/V help the teacher?

On the picture-plus-knowledge rows (held-out pictures), the original LM as the plugin's teacher reads the
degraded student's per-layer image K/V (``kv_share.scope: image``) or has the image masked out of its
attention (``scope: none``); both are scored like a student (argmax at the answer). Also measured: the same
teacher on the vision rows (what uniform distillation pulls vision answers toward) and the student itself.
"""

from __future__ import annotations

from typing import Any

from . import plugin_api as plugin
from .build import Build
from .evaluate import Scores, score, student_logits
from .template import as_swift_loads

__all__ = ["measure_gate", "teacher_scores"]

_EVAL_CHANNEL = "ld=1.0;eval"  # every row asked


def teacher_scores(build: Build, scope: str, set_name: str, student=None) -> Scores:
    """The original LM as teacher, through the plugin's Distiller, on ``set_name`` with ``scope``."""
    student = student if student is not None else build.degraded
    as_swift_loads(student)
    config = plugin.make_config(plugin.shipped_config("selective", **{"kv_share.scope": scope}))
    distiller = plugin.make_distiller(config, student, build.lm)
    template = build.encoder.template

    def at(batch, positions):
        tagged = batch.tagged(lambda row: _EVAL_CHANNEL)
        return plugin.teacher_answer_logits(distiller, student, template, tagged, positions)

    return score(build.evals[set_name], build.encoder, at)


def measure_gate(build: Build) -> dict[str, Any]:
    """Accuracy (and by task) of teacher-with-image, teacher-blind and the student, on image+knowledge rows and
    on vision rows; ``gain`` = with image - blind on image+knowledge rows (the gate)."""
    out: dict[str, Any] = {}
    for set_name in ("image_knowledge", "vision"):
        rows = {
            "teacher_reads_image_kv": teacher_scores(build, "image", set_name),
            "teacher_blind": teacher_scores(build, "none", set_name),
            "student": score(build.evals[set_name], build.encoder, student_logits(build.degraded)),
        }
        out[set_name] = {name: {"accuracy": s.accuracy, "by_task": s.by_task()} for name, s in rows.items()}
    ik = out["image_knowledge"]
    out["gain"] = ik["teacher_reads_image_kv"]["accuracy"] - ik["teacher_blind"]["accuracy"]
    return out
