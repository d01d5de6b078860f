"""Every supported family's tiny test student, by swift model_type: the invariants run on all of them.

Adding a family: write its ``tests/support/cases/<family>.py`` and add one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.harness import FamilyCase


def _qwen(name: str) -> Callable[[], FamilyCase]:
    def build() -> FamilyCase:
        from swift_lingudistill.tiny import qwen_tokenizer
        from tests.support.cases.qwen import qwen_case

        return qwen_case(name, qwen_tokenizer())

    return build


def _qwen3_vl() -> FamilyCase:
    from tests.support.cases.qwen3_vl import qwen3_vl_case
    from tests.support.tiny.qwen3_vl import qwen3_tokenizer

    return qwen3_vl_case(qwen3_tokenizer())


def _llava() -> FamilyCase:
    from tests.support.cases.llava import llava_case
    from tests.support.tiny.llava import llava_tokenizers

    return llava_case(llava_tokenizers()[1])


def _idefics3() -> FamilyCase:
    from tests.support.cases.idefics3 import idefics3_case
    from tests.support.tiny.idefics3 import idefics3_tokenizers

    return idefics3_case(idefics3_tokenizers()[1])


def _internvl() -> FamilyCase:
    from tests.support.cases.internvl import internvl_case
    from tests.support.tiny.internvl import internvl_tokenizer

    return internvl_case(internvl_tokenizer())


def _llava_onevision() -> FamilyCase:
    from tests.support.cases.llava_onevision import llava_onevision_case
    from tests.support.tiny.llava_onevision import llava_onevision_tokenizers

    return llava_onevision_case(llava_onevision_tokenizers()[1])


def _gemma3() -> FamilyCase:
    from tests.support.cases.gemma3 import gemma3_case

    return gemma3_case("swift")


CASE_BUILDERS: dict[str, Callable[[], FamilyCase]] = {
    "qwen2_5_vl": _qwen("qwen2_5_vl"),
    "qwen2_vl": _qwen("qwen2_vl"),
    "qwen3_vl": _qwen3_vl,
    "llava1_5_hf": _llava,
    "idefics3": _idefics3,
    "gemma3_vision": _gemma3,
    "internvl": _internvl,
    "llava_onevision_hf": _llava_onevision,
}
