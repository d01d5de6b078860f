"""docs/METHOD.md's invariants 1-5 on a tiny student of every supported family (tests/support/cases/), trained as swift
trains: train mode, reentrant gradient checkpointing, a right-padded batch of three (two images, none, one)."""

from __future__ import annotations

import pytest

from swift_lingudistill.families import supported_model_types
from tests.support.cases import CASE_BUILDERS
from tests.support.harness import SCOPES
from tests.support.invariants import (
    check_compact_equals_full,
    check_no_image_equals_plain_teacher,
    check_selection_is_exact,
    check_self_teacher_identity,
    check_teacher_sees_the_image,
)


def test_every_supported_family_has_a_test_case():
    assert set(CASE_BUILDERS) == set(supported_model_types())


@pytest.fixture(scope="module", params=sorted(CASE_BUILDERS))
def case(request):
    return CASE_BUILDERS[request.param]()


@pytest.mark.parametrize("scope", SCOPES)
def test_self_teacher_equals_student_at_every_text_position(case, scope):
    """Invariant 1: teacher weights = the student's LM weights -> identical logits at every text position."""
    check_self_teacher_identity(case, scope)


def test_no_image_sample_equals_plain_teacher_forward(case):
    """Invariant 2."""
    check_no_image_equals_plain_teacher(case)


def test_teacher_sees_the_image(case):
    """Invariant 3."""
    check_teacher_sees_the_image(case)


@pytest.mark.parametrize("scope", SCOPES)
def test_compact_teacher_equals_full_sequence_teacher(case, scope):
    """Invariant 4."""
    check_compact_equals_full(case, scope)


def test_selection_is_exact(case):
    """Invariant 5."""
    check_selection_is_exact(case)
