"""swift's Qwen2.5-VL template with the harness's small image/video ids, registered as ``evidence_qwen2_5_vl``.

``Qwen2VLTemplate`` hard-codes ``image_token_id = 151655`` as a class attribute; with a small vocabulary swift
would then find no image token, expand nothing and still "train" on the bare ``<|image_pad|>``. This subclass
overrides the ids and checks every encoded sample: one image token per merged patch, or an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swift.template import register_template
from swift.template.register import TEMPLATE_MAPPING
from swift.template.templates.qwen import Qwen2_5VLTemplate, QwenTemplateMeta

from .vocab import IMAGE_TOKEN_ID, VIDEO_TOKEN_ID

__all__ = [
    "TEMPLATE_NAME",
    "EvidenceQwen2_5VLTemplate",
    "as_swift_loads",
    "check_image_tokens",
    "load_template",
    "register",
]

TEMPLATE_NAME = "evidence_qwen2_5_vl"


def check_image_tokens(input_ids: list[int], image_grid_thw: Any, merge_size: int) -> int:
    """The number of image tokens, checked against the vision tower's merged patches; raises on a mismatch."""
    expected = 0 if image_grid_thw is None else int(image_grid_thw.prod(dim=-1).sum()) // merge_size**2
    found = sum(1 for token in input_ids if token == IMAGE_TOKEN_ID)
    if found != expected:
        raise ValueError(
            f"{found} image tokens (id {IMAGE_TOKEN_ID}) in the encoded sample, but its images have {expected} "
            "merged patches: the template did not expand the image placeholders"
        )
    return found


class EvidenceQwen2_5VLTemplate(Qwen2_5VLTemplate):
    """Qwen2.5-VL's template at the harness tokenizer's ids, with the image-token count checked per sample."""

    image_token_id = IMAGE_TOKEN_ID
    video_token_id = VIDEO_TOKEN_ID

    def _encode(self, inputs: Any) -> dict[str, Any]:
        encoded = super()._encode(inputs)
        grid = encoded.get("image_grid_thw")
        merge = self.processor.image_processor.merge_size if grid is not None else 1
        check_image_tokens(encoded["input_ids"], grid, merge)
        return encoded


def register() -> None:
    """Register the template once (the plugin file may be imported again by dataloader workers)."""
    if TEMPLATE_NAME in TEMPLATE_MAPPING:
        return
    # No default system prompt: shorter sequences, and the chat words stay few.
    register_template(QwenTemplateMeta(TEMPLATE_NAME, template_cls=EvidenceQwen2_5VLTemplate, default_system=None))


def load_template(model_dir: str | Path) -> Any:
    """swift's processor and this template for a local checkpoint (the LM or the VLM), in training mode.

    Training mode gives labels on the assistant turn; everything the harness trains or measures is encoded here,
    so its format is exactly what ``swift sft`` trains on.
    """
    import json

    from swift.model import get_processor
    from swift.template import get_template

    register()
    hf_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    model_type = {"qwen2": "qwen2", "qwen2_5_vl": "qwen2_5_vl"}[hf_type]
    template = get_template(get_processor(str(model_dir), model_type=model_type), template_type=TEMPLATE_NAME)
    template.set_mode("train")
    return template


def as_swift_loads(model: Any) -> Any:
    """Give an in-memory VLM the attributes swift's model loader adds (``model.visual``, ``model.language_model``
    as class properties, for transformers 5), which the template's forward hook reads."""
    from swift.model.register import _set_property

    for key in ("language_model", "visual"):
        _set_property(model, key)
    return model
