"""Lineage of the published student/teacher pairs issue 14 adds, from their config.json values, on the meta device.

Each pair's real-size student and teacher are instantiated on the meta device (no memory, no weights, no hub):
the adapter must reach the real model's language model and the lineage check must accept or refuse the pair for
the right reason. Where the two rotate at different bases, re-basing the shared keys (kv_share.rebase_rotary,
on by default) makes the pair acceptable and exact; with it off, the pair is refused as before.

Where the numbers come from (written out: nothing here can be downloaded):
- InternVL3-8B-hf: the config.json quoted in full in vllm-project/vllm#17634 (image_seq_length 256,
  image_token_id 151667, downsample_ratio 0.5, text rope_theta 1e6, vocab_size 151674, use_sliding_window false)
  with ``rope_scaling {type: dynamic, factor: 2.0}`` (SWIFT_NOTES.md, read from copies of InternVL3-1B-hf and
  InternVL3-8B configs); its language model has Qwen2.5-7B's shape (InternVL3 report: initialised from Qwen2.5).
- Qwen2.5-7B-Instruct, Qwen2.5-3B-Instruct, Qwen2-7B-Instruct, Qwen2-0.5B-Instruct: their config.json files
  (Qwen2.5-7B's also in tests/test_teacher.py).
- llava-onevision-qwen2-7b-ov-hf: its config.json (text_config: Qwen2-7B-Instruct's shape, vocab_size 152128;
  image_token_index 151646, vision_feature_select_strategy full; SigLIP so400m tower) and SWIFT_NOTES.md.
- Qwen3-VL-8B-Instruct / Qwen3-8B and SmolVLM-Instruct / SmolLM2-1.7B-Instruct: the fixtures already in
  tests/test_family_qwen3_vl.py and tests/test_family_idefics3.py (rope_theta 5,000,000 vs 1,000,000 and
  273,768 vs 130,000).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from swift_lingudistill.families import family_for, lineage_of
from swift_lingudistill.rope_rebase import RotaryInfo, RotaryRebase, reconcile_rotary
from swift_lingudistill.teacher import LineageError, check_lineage
from tests.families.test_idefics3 import SMOLLM2_1_7B_INSTRUCT, SMOLVLM_INSTRUCT_TEXT
from tests.families.test_qwen3_vl import QWEN3_8B, QWEN3_VL_8B_INSTRUCT

INTERNVL3_8B_HF = {
    "architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl", "downsample_ratio": 0.5,
    "image_seq_length": 256, "image_token_id": 151667, "projector_hidden_act": "gelu", "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "text_config": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rope_scaling": {"factor": 2.0, "rope_type": "dynamic", "type": "dynamic"}, "sliding_window": None,
        "use_sliding_window": False, "vocab_size": 151674, "tie_word_embeddings": False, "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "model_type": "internvl_vision", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "image_size": [448, 448], "patch_size": [14, 14], "attention_bias": True,
        "use_qk_norm": False, "layer_scale_init_value": 0.1, "norm_type": "layer_norm", "use_mean_pooling": True,
    },
}  # fmt: skip
QWEN2_5_7B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "max_position_embeddings": 32768, "max_window_layers": 28, "rope_theta": 1000000.0, "rope_scaling": None,
    "sliding_window": 131072, "use_sliding_window": False, "vocab_size": 152064, "tie_word_embeddings": False,
}  # fmt: skip
QWEN2_5_3B_INSTRUCT = {
    **QWEN2_5_7B_INSTRUCT, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
    "num_attention_heads": 16, "num_key_value_heads": 2, "max_window_layers": 70, "sliding_window": 32768,
    "vocab_size": 151936, "tie_word_embeddings": True,
}  # fmt: skip
LLAVA_ONEVISION_QWEN2_7B_OV_HF = {
    "architectures": ["LlavaOnevisionForConditionalGeneration"], "model_type": "llava_onevision",
    "image_token_index": 151646, "video_token_index": 151647, "projector_hidden_act": "gelu",
    "vision_feature_layer": -1, "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
    "tie_word_embeddings": False,
    "text_config": {
        "_name_or_path": "Qwen/Qwen2-7B-Instruct", "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "max_position_embeddings": 32768, "max_window_layers": 28,
        "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": False, "vocab_size": 152128,
        "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "vision_config": {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
        "num_attention_heads": 16, "num_hidden_layers": 26, "patch_size": 14, "vision_use_head": False,
    },
}  # fmt: skip
QWEN2_7B_INSTRUCT = {**QWEN2_5_7B_INSTRUCT}  # the same numbers as Qwen2.5-7B-Instruct
QWEN2_0_5B_INSTRUCT = {
    **QWEN2_5_7B_INSTRUCT, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_window_layers": 24, "vocab_size": 151936,
    "tie_word_embeddings": True,
}  # fmt: skip
SMOLVLM_INSTRUCT = {
    "architectures": ["Idefics3ForConditionalGeneration"], "model_type": "idefics3", "image_token_id": 49153,
    "scale_factor": 3, "text_config": SMOLVLM_INSTRUCT_TEXT,
    "vision_config": {"model_type": "idefics3_vision", "hidden_size": 1152, "image_size": 384, "patch_size": 14,
                      "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27},
}  # fmt: skip
SMOLLM2_1_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **SMOLLM2_1_7B_INSTRUCT}

# swift model_type, student config.json, teacher config.json, what the check must decide (rebase or not)
PAIRS = {
    "InternVL3-8B-hf / Qwen2.5-7B-Instruct": ("internvl", INTERNVL3_8B_HF, QWEN2_5_7B_INSTRUCT, False),
    "llava-onevision-qwen2-7b-ov-hf / Qwen2-7B-Instruct": (
        "llava_onevision_hf",
        LLAVA_ONEVISION_QWEN2_7B_OV_HF,
        QWEN2_7B_INSTRUCT,
        False,
    ),
    "Qwen3-VL-8B-Instruct / Qwen3-8B": ("qwen3_vl", QWEN3_VL_8B_INSTRUCT, QWEN3_8B, True),
    "SmolVLM-Instruct / SmolLM2-1.7B-Instruct": ("idefics3", SMOLVLM_INSTRUCT, SMOLLM2_1_7B, True),
}
SWIFT_DEFAULT_MAX_LENGTH = 32768  # swift's --max_length default: the smallest max_position_embeddings it finds


def _config(tmp_path, name: str, data: dict):
    """Load a config.json the way the plugin does (AutoConfig on a local folder)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(data))
    return AutoConfig.from_pretrained(folder)


def _check(model_type: str, student, teacher, **kwargs):
    return check_lineage(family_for(model_type).lineage(student), lineage_of(teacher), "the teacher", **kwargs)


def _cpu_rotary(decoder: torch.nn.Module) -> torch.nn.Module:
    """The decoder's rotary embedding rebuilt on the CPU from its config (meta tensors hold no values)."""
    with torch.device("cpu"):
        return type(decoder.rotary_emb)(config=decoder.config)


@pytest.mark.parametrize("pair", PAIRS)
def test_published_pair_passes_lineage_at_real_size_on_the_meta_device(pair, tmp_path):
    model_type, student_json, teacher_json, rebases = PAIRS[pair]
    student_config, teacher_config = _config(tmp_path, "s", student_json), _config(tmp_path, "t", teacher_json)
    family = family_for(model_type)
    assert family_for(None, student_config) is family
    with torch.device("meta"):
        student = AutoModelForImageTextToText.from_config(student_config)
        teacher = AutoModelForCausalLM.from_config(teacher_config)
    student_lm, teacher_lm = family.language_model(student), teacher.model
    assert len(family.attention_modules(student_lm)) == len(family.attention_modules(teacher_lm))
    plan = _check(model_type, student_config, teacher_config, rebase_rotary=True, max_length=SWIFT_DEFAULT_MAX_LENGTH)
    assert plan.rebase is rebases
    if rebases:  # the rotation the run would build, at the real head size, targets the teacher's base
        rebase = RotaryRebase.from_rotary(_cpu_rotary(student_lm), _cpu_rotary(teacher_lm))
        head = family.lineage(student_config)["head_size"]
        base = RotaryInfo.from_config(teacher_config).base
        assert rebase.frequencies == head // 2
        torch.testing.assert_close(rebase.teacher_inv_freq, 1.0 / base ** (torch.arange(0, head, 2).float() / head))


@pytest.mark.parametrize("pair", [p for p in PAIRS if PAIRS[p][3]])
def test_rotary_base_pairs_are_refused_without_rebasing(pair, tmp_path):
    model_type, student_json, teacher_json, _ = PAIRS[pair]
    student_config, teacher_config = _config(tmp_path, "s", student_json), _config(tmp_path, "t", teacher_json)
    with pytest.raises(LineageError) as info:
        _check(model_type, student_config, teacher_config, rebase_rotary=False, max_length=SWIFT_DEFAULT_MAX_LENGTH)
    message = str(info.value)
    assert f"{'rotary_base':<16} student" in message and "layers" not in message
    assert "kv_share.rebase_rotary is false" in message and "remove `rebase_rotary: false`" in message


def test_internvl3_dynamic_scaling_is_the_identity_up_to_max_position_embeddings(tmp_path):
    """InternVL3-hf's dynamic NTK x2 rotates as Qwen2.5's plain RoPE below 32768 positions: accepted, no re-base,
    up to --max_length 32768; above (or unknown), refused with the reason and the fix."""
    student, teacher = _config(tmp_path, "s", INTERNVL3_8B_HF), _config(tmp_path, "t", QWEN2_5_7B_INSTRUCT)
    plan = _check("internvl", student, teacher, rebase_rotary=True, max_length=32768)
    assert not plan.rebase and "dynamic NTK scaling changes nothing below max_position_embeddings (32768)" in plan.note
    for max_length in (32769, None):
        with pytest.raises(LineageError) as info:
            _check("internvl", student, teacher, rebase_rotary=True, max_length=max_length)
        message = str(info.value)
        assert f"{'rotary_scaling':<16} student dynamic x2.0" in message
        assert f"--max_length is {max_length}" in message and "Fix: set --max_length 32768 or less" in message


def test_wrong_sizes_list_every_mismatch_even_with_rebasing(tmp_path):
    internvl = _config(tmp_path, "internvl", INTERNVL3_8B_HF)
    with pytest.raises(LineageError) as info:
        _check("internvl", internvl, _config(tmp_path, "q25_3b", QWEN2_5_3B_INSTRUCT), rebase_rotary=True,
               max_length=32768)  # fmt: skip
    message = str(info.value)
    for name, s, t in [("layers", 28, 36), ("hidden_size", 3584, 2048), ("attention_heads", 28, 16),
                       ("kv_heads", 4, 2), ("rotary_scaling", "dynamic x2.0", None)]:  # fmt: skip
        assert f"{name:<16} student {s!s:<14} teacher {t}" in message
    assert "Rotary embeddings:" not in message  # not a rotary-only difference: no re-basing talk
    ov = _config(tmp_path, "ov", LLAVA_ONEVISION_QWEN2_7B_OV_HF)
    with pytest.raises(LineageError) as info:
        _check("llava_onevision_hf", ov, _config(tmp_path, "q2_05b", QWEN2_0_5B_INSTRUCT), rebase_rotary=True)
    for name, s, t in [("layers", 28, 24), ("hidden_size", 3584, 896), ("attention_heads", 28, 14),
                       ("kv_heads", 4, 2), ("head_size", 128, 64)]:  # fmt: skip
        assert f"{name:<16} student {s!s:<14} teacher {t}" in str(info.value)


def _info(base: float, kind: str = "default", factor: float | None = None, max_positions: int = 32768):
    return RotaryInfo(base=base, kind=kind, factor=factor, max_positions=max_positions)


def test_rotations_that_change_with_the_length_are_refused_with_the_reason():
    """longrope and dynamic NTK beyond its threshold change their frequencies per batch length: no exact re-base."""
    plan = reconcile_rotary(_info(1e4, "longrope", 4.0), _info(5e5), rebase_enabled=True, max_length=4096)
    assert not plan.rebase and "'longrope' changes its frequencies with the sequence length" in plan.refusal
    plan = reconcile_rotary(_info(1e6, "dynamic", 2.0), _info(5e6), rebase_enabled=True, max_length=65536)
    assert "dynamic NTK scaling (x2) changes its rotary frequencies" in plan.refusal


def test_fixed_scalings_compose_with_any_base():
    """llama3 / linear / yarn fix their frequencies once: re-basing between them is exact; so is dynamic NTK
    below its threshold against another base."""
    for student in (_info(5e5, "llama3", 8.0), _info(1e4, "linear", 4.0), _info(1e6, "dynamic", 2.0)):
        plan = reconcile_rotary(student, _info(5e6), rebase_enabled=True, max_length=4096)
        assert plan.rebase and plan.refusal is None and "re-based exactly" in plan.note


def test_a_run_rebases_by_default_and_refuses_when_told_not_to(tmp_path):
    """The plugin's own pre-load check (integration.teacher_resolution.check_teacher) on the Qwen3-VL/Qwen3
    configs: re-basing is on by default and recorded for the teacher's construction; ``rebase_rotary: false``
    stops the run before any weights load."""
    from types import SimpleNamespace

    from swift_lingudistill.config import config_from_dict
    from swift_lingudistill.integration.run_state import RunState
    from swift_lingudistill.integration.teacher_resolution import check_teacher
    from tests.support.tiny.qwen3_vl import qwen3_tokenizer

    tokenizer = qwen3_tokenizer()
    for name, data in (("student", QWEN3_VL_8B_INSTRUCT), ("teacher", QWEN3_8B)):
        _config(tmp_path, name, data)
        tokenizer.save_pretrained(tmp_path / name)  # the same tokenizer files: compared without loading twice

    def state(kv_share: dict) -> RunState:
        config = config_from_dict({"teacher": {"model": str(tmp_path / "teacher")}, "kv_share": kv_share})
        args = SimpleNamespace(model=str(tmp_path / "student"), use_hf=True, max_length=4096)
        return RunState(config=config, config_path="test", args=args, family=family_for("qwen3_vl"), tagger=None)

    accepted = state({})
    check_teacher(accepted)
    assert accepted.rotary_rebase is True and accepted.teacher_model_type == "qwen3"
    with pytest.raises(LineageError, match=r"kv_share\.rebase_rotary is false"):
        check_teacher(state({"rebase_rotary": False}))
