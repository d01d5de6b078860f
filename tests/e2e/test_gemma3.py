"""Gemma 3 end to end through the real `swift sft` command (subprocesses) on a tiny Gemma 3 VLM and text teacher."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from swift_lingudistill.families.gemma3 import Gemma3UnsupportedConfigError
from tests.support.e2e_checks import selective_distils, self_teacher_starts_at_zero
from tests.support.swift_runs import OFFLINE
from tests.support.tiny.gemma3 import BOI_ID, IMAGE_SOFT_ID, build_gemma3_assets

pytestmark = pytest.mark.slow

MODEL_TYPE = "gemma3_vision"  # swift's model_type and template name are the same for Gemma 3 VLMs


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Teacher Gemma3ForCausalLM, the perturbed VLM built from it, and a mixed dataset, built once."""
    return build_gemma3_assets(tmp_path_factory.mktemp("gemma3"))


@pytest.mark.parametrize(("tuner", "snapshot"), [("full", "self (frozen copy)"), ("lora", "LoRA adapters disabled")])
def test_self_teacher_has_zero_kd_loss_at_step_one(assets, tmp_path, tuner, snapshot):
    """Invariant 1 through swift: eager attention, sliding layers, swift's token_type_ids; the teacher is a frozen
    copy (full) or the base model with the adapters off (LoRA)."""
    run = self_teacher_starts_at_zero(assets, tmp_path, MODEL_TYPE, tuner=tuner)
    assert "LinguDistill teacher: self" in run.output and snapshot in run.output


def test_selective_lora_with_a_gemma3_text_teacher_distils(assets, tmp_path):
    run = selective_distils(assets, tmp_path, MODEL_TYPE)
    assert "(model_type gemma3_text)" in run.output  # the teacher's own swift model_type was inferred


def test_swift_marks_start_of_image_not_the_soft_tokens(assets, monkeypatch):
    """What the direct tests' batches mirror (cases_gemma3.swift_token_type_ids): swift 4.6's gemma3_vision
    template sets token_type_ids = 1 at `<start_of_image>` only, so soft image tokens attend causally."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    from swift.model import get_processor
    from swift.template import get_template

    processor = get_processor(str(assets["student"]), model_type=MODEL_TYPE, use_hf=True)
    template = get_template(processor, template_type=MODEL_TYPE)
    template.set_mode("train")
    image = next((assets["dataset"].parent / "images").glob("*.png"))
    row = {"messages": [{"role": "user", "content": "<image>Hi?"}, {"role": "assistant", "content": "Yes."}]}
    encoded = template.encode({**row, "images": [str(image)]})
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    assert ids.count(IMAGE_SOFT_ID) == 9
    assert [i for i, t in enumerate(types) if t] == [ids.index(BOI_ID)]


def test_a_soft_capping_teacher_is_refused_before_its_weights_load(assets, tmp_path):
    import json
    import shutil

    from swift_lingudistill.config import config_from_dict
    from swift_lingudistill.families import family_for
    from swift_lingudistill.integration.run_state import RunState
    from swift_lingudistill.integration.teacher_resolution import check_teacher

    teacher = tmp_path / "softcap_teacher"  # config and tokenizer only: a refusal must not need the weights
    teacher.mkdir()
    config = json.loads((assets["teacher"] / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "final_logit_softcapping": 30.0}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(assets["teacher"] / name, teacher / name)
    state = RunState(
        config=config_from_dict({"teacher": {"model": str(teacher)}}),
        config_path="test",
        args=SimpleNamespace(model=str(assets["student"]), use_hf=True),
        family=family_for(MODEL_TYPE),
        tagger=None,
    )
    with pytest.raises(Gemma3UnsupportedConfigError, match=r"final_logit_softcapping = 30\.0"):
        check_teacher(state)
