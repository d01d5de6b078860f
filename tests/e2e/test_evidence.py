"""The evidence harness (examples/evidence) at test size, and the committed results file behind the README's claims.

One build at the experiment's recipe (pilot build 2), in process through the plugin's trainer step; only what holds
at this size with a wide margin is asserted (thresholds below, measured values in each docstring):
- the gate: the original LM reading the degraded student's image K/V answers picture+knowledge rows far better
  than with the image masked out of its attention (``kv_share.scope: none``);
- the tags: ``selective.yaml`` distils exactly the language-heavy recovery rows, ``uniform.yaml`` all of them;
- the trade-off: uniform distillation costs vision, selective does not;
- negative controls that must fail those checks: a blind teacher on both sides of the gate, and uniform at
  lambda 0 (which is plain cross-entropy) in the trade-off.
Language recovery is never asserted from one training run here: those claims are checked against the committed
multi-unit results (their confidence intervals), and the README's tables must be that file's tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = REPO / "examples" / "evidence"
sys.path.insert(0, str(EVIDENCE))

from mechanism.report import tables  # noqa: E402

RESULTS = EVIDENCE / "results" / "summary.json"
SEED = 2  # pilot build 2 (its gate, measured before any arm, is in results/pilot_summary.json)
GATE_MARGIN = 20.0  # points


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    import torch
    from mechanism.arms import ARMS, Arm
    from mechanism.build import BuildRecipe, build_models
    from mechanism.gate import measure_gate, teacher_scores
    from mechanism.recovery import RecoveryRecipe, recovery_rows, run_arm, unit_batches

    torch.set_num_threads(1)
    build = build_models(SEED, BuildRecipe(), tmp_path_factory.mktemp("evidence"), log=lambda _: None)
    recipe = RecoveryRecipe(steps=60)
    encoded = build.encoder.encode(recovery_rows(build, recipe))
    batches = unit_batches(encoded, build, 0, recipe.batch_size)
    arms = {
        "A0": ARMS["A0"],
        "A2": ARMS["A2"],
        "A6": ARMS["A6"],
        "A6 at lambda 0": Arm("A6 at lambda 0", config="uniform", overrides={"loss.lambda": 0.0}),
    }
    runs = {name: run_arm(build, arm, batches, recipe, unit="test") for name, arm in arms.items()}
    blind = teacher_scores(build, "none", "image_knowledge").accuracy
    return {"build": build, "gate": measure_gate(build), "blind_again": blind, "encoded": encoded, "runs": runs}


def _vision(small, arm: str) -> float:
    return 100 * small["runs"][arm]["scores"]["vision"].accuracy


def _gate_passes(with_image: float, blind: float) -> bool:
    return 100 * (with_image - blind) >= GATE_MARGIN


def test_gate_teacher_sees_the_image_through_the_students_kv(small):
    """Measured at this size (build 2, one thread): the teacher reading the image K/V 57.8 %, masked 16.7 % (the
    degraded student 5.6 %): a gain of 41.1 points against the 20 required, the pre-registered gate margin. The
    four pilot builds gained 41.1-58.9 points, so the margin is about 20 points wide."""
    ik = small["gate"]["image_knowledge"]
    assert _gate_passes(ik["teacher_reads_image_kv"]["accuracy"], ik["teacher_blind"]["accuracy"]), ik
    # Negative control: the same check on a teacher blind on both sides must fail (it gains exactly nothing).
    assert small["blind_again"] == ik["teacher_blind"]["accuracy"]
    assert not _gate_passes(small["blind_again"], ik["teacher_blind"]["accuracy"])


def test_tags_are_exactly_the_language_rows(small):
    """selective.yaml distils every picture+knowledge, several-answer and fact row and no vision row (by their
    category, through the plugin's tagger); uniform.yaml distils all; the trainer saw the same shares."""
    from mechanism import plugin_api as plugin

    language = {"flag_of_shape", "digit_plus", "flag_any", "capital", "flag", "country_of", "sum"}
    expected = sum(e.sample.question.task in language for e in small["encoded"])
    for name, want in (("selective", expected), ("uniform", len(small["encoded"]))):
        weight = plugin.tag_weight(plugin.make_config(plugin.shipped_config(name)))
        decided = [weight(e.row) for e in small["encoded"]]
        assert sum(w == 1.0 for w in decided) == want and sum(w == 0.0 for w in decided) == len(decided) - want
    for arm, share in (("A2", expected / len(small["encoded"])), ("A6", 1.0)):
        logged = [step["distill_frac"] for step in small["runs"][arm]["log"]]
        assert abs(sum(logged) / len(logged) - share) < 1e-9


def test_uniform_distillation_costs_vision_and_selective_does_not(small):
    """Measured at this size (build 2, 60 recovery steps, one thread): vision A0 95.0 %, A2 95.6 %, A6 85.0 %, A6 at
    lambda 0 95.0 %. Selective must stay within 5 points of plain (it is 0.6 above); uniform must lose at least 5
    against selective (it loses 10.6; in the four-build pilot at the full recipe it lost 10.2 on average, 3.8 to
    18.8 per unit, so a single unit can fall short: that is why this is a one-build check with a 5-point bar, and
    the claim itself is checked against the committed table); uniform at lambda 0 is plain CE and must not (it
    loses 0.6)."""
    plain, selective, uniform = _vision(small, "A0"), _vision(small, "A2"), _vision(small, "A6")
    assert selective >= plain - 5.0, (plain, selective)
    assert uniform <= selective - 5.0, (uniform, selective)
    # Negative control: uniform at lambda 0 is plain cross-entropy on the same rows; it must not "lose vision".
    assert not _vision(small, "A6 at lambda 0") <= selective - 5.0


def test_readme_tables_are_the_committed_results():
    """The README's results are exactly the committed summary's tables (so every number there is in the file)."""
    summary = json.loads(RESULTS.read_text())
    readme = (EVIDENCE / "README.md").read_text()
    assert tables(summary) in readme


def test_committed_results_support_the_claims():
    """What the READMEs claim, checked against the committed file's intervals (never against one training run):
    8 units over 4 builds, the gate passed in every build, the primary effect detectable (its 95 % CI above
    +3 points), above reweighting, the blind teacher and the know-nothing teacher at both temperatures, no vision
    lost by selective while uniform loses it, and the one cost the READMEs report (image + knowledge below plain)."""
    summary = json.loads(RESULTS.read_text())
    assert summary["label"] == "confirmatory"
    assert len(summary["units"]) >= 8 and len({b for b, _ in summary["units"]}) >= 4
    assert min(g["gain"] for g in summary["gate"].values()) >= GATE_MARGIN
    primary = summary["primary"]
    assert primary["comparison"] == "A2 - A0 | held_out_facts" and primary["detectable"] and primary["ci_low"] > 3.0
    secondary = summary["secondary"]
    for name in ("A2 - A1", "A2 - A3", "A2 - A5", "A2@T2 - A5@T2"):
        assert secondary[f"{name} | held_out_facts"]["ci_low"] > 0, name
    assert secondary["A6 - A2 | vision"]["ci_high"] < 0
    assert secondary["A2 - A0 | vision"]["ci_low"] > -2.0 and secondary["A2 - A0 | vision"]["ci_high"] < 2.0
    assert secondary["A2 - A0 | image_knowledge"]["ci_high"] < 0
