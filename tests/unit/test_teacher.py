"""The teacher must be the LM the student was built from: lineage from configs, vocabulary from tokenizers."""

from __future__ import annotations

import copy

import pytest
from transformers import Qwen2_5_VLConfig, Qwen2Config

from swift_lingudistill.families import UnsupportedFamilyError, family_for, lineage_of
from swift_lingudistill.teacher import LineageError, VocabularyError, check_lineage, shared_vocabulary

# Published values (config.json of each checkpoint), written out so no hub access is needed.
QWEN25_VL_7B_TEXT = dict(
    num_hidden_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    rms_norm_eps=1e-06, vocab_size=152064, intermediate_size=18944,
)  # fmt: skip
QWEN25_7B = dict(
    num_hidden_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-06,
    vocab_size=152064, intermediate_size=18944,
)  # fmt: skip
QWEN25_3B = dict(
    num_hidden_layers=36, hidden_size=2048, num_attention_heads=16, num_key_value_heads=2,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-06,
    vocab_size=151936, intermediate_size=11008,
)  # fmt: skip


def student_lineage():
    config = Qwen2_5_VLConfig(text_config=QWEN25_VL_7B_TEXT)
    return family_for("qwen2_5_vl").lineage(config)


def test_real_pair_matches():
    """Qwen2.5-VL-7B-Instruct's language model came from Qwen2.5-7B-Instruct: same numbers."""
    check_lineage(student_lineage(), lineage_of(Qwen2Config(**QWEN25_7B)))


def test_wrong_size_lists_every_mismatch():
    with pytest.raises(LineageError) as info:
        check_lineage(student_lineage(), lineage_of(Qwen2Config(**QWEN25_3B)), "Qwen/Qwen2.5-3B-Instruct")
    message = str(info.value)
    for name, student, teacher in [
        ("layers", 28, 36),
        ("hidden_size", 3584, 2048),
        ("attention_heads", 28, 16),
        ("kv_heads", 4, 2),
    ]:
        assert f"{name:<16} student {student!s:<14} teacher {teacher}" in message
    assert "head_size" not in message  # 128 on both sides: only mismatches are listed
    assert "Qwen/Qwen2.5-3B-Instruct" in message and "Fix:" in message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}, "rotary_base"),
        ({"rms_norm_eps": 1e-5}, "norm_eps"),
        ({"num_key_value_heads": 28}, "kv_heads"),
    ],
)
def test_each_lineage_number_is_checked(change, field):
    with pytest.raises(LineageError, match=field):
        check_lineage(student_lineage(), lineage_of(Qwen2Config(**{**QWEN25_7B, **change})))


def test_unsupported_student_lists_the_supported_ones():
    with pytest.raises(UnsupportedFamilyError, match="qwen2_5_vl, qwen2_vl"):
        family_for("internvl3")


def test_identical_tokenizers_share_the_smaller_output_size(tokenizer):
    assert shared_vocabulary(tokenizer, tokenizer, 151936, 152064) == 151936


def test_tokenizers_that_disagree_on_shared_ids_are_refused(tokenizer):
    other = copy.deepcopy(tokenizer)
    vocab = other.get_vocab()
    # A tokenizer whose ids 0 and 1 are swapped means different tokens for the same ids.
    swapped = {tok: (1 if i == 0 else 0 if i == 1 else i) for tok, i in vocab.items()}

    class Swapped:
        def get_vocab(self):
            return swapped

    with pytest.raises(VocabularyError, match=r"disagree on 2 of \d+ shared token ids .*id 0: student '!'"):
        shared_vocabulary(tokenizer, Swapped(), 151936, 151936)
