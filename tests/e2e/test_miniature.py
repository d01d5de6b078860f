"""The miniature reproduction (examples/miniature), reduced to one seed and small sizes, through the real `swift sft`.

Same code paths as ``examples/miniature/run.py``: the original LM and the vision tower trained in plain PyTorch,
multimodal fine-tuning that degrades language, then recovery with plain CE as LinguDistill at lambda 0 (a'),
uniform (b) and selective (c) LinguDistill, the monitor on every recovery run. Only what is robust at this
size is checked; see the thresholds' comments.

Negative control: ``MINIATURE_TEST_OVERRIDES="selective:loss.lambda=0,uniform:loss.lambda=0"`` turns the
distillation off in (b) and (c) while keeping everything else; the method-specific checks must then fail.
"""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow

MINIATURE = REPO / "examples" / "miniature"
sys.path.insert(0, str(MINIATURE))

from minirepro.pipeline import Recipe, run_seed  # noqa: E402
from minirepro.pretrain import PretrainRecipe  # noqa: E402
from minirepro.swift_cli import CPU_FLAGS, OFFLINE_ENV  # noqa: E402
from minirepro.vision_pretrain import VisionRecipe  # noqa: E402

SEED = 0


def _overrides() -> dict[str, dict[str, object]]:
    """Per-run plugin-config overrides from MINIATURE_TEST_OVERRIDES (RUN:SECTION.KEY=VALUE, comma-separated)."""
    out: dict[str, dict[str, object]] = {}
    for item in filter(None, os.environ.get("MINIATURE_TEST_OVERRIDES", "").split(",")):
        run, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        out.setdefault(run, {})[key] = yaml.safe_load(value)
    return out


# Fewer steps than the README's recipe (LM 600 of 1000, stage 2 500 of 2000, recovery 150 of 200) and 16
# countries of 24: one seed in 136 s on the project's 2-core CPU.
SMALL = Recipe(
    countries=16,
    lm=PretrainRecipe(steps=600),
    vision=VisionRecipe(steps=400),
    stage2_steps=500,
    recovery_steps=150,
    eval_steps=75,
    val_rows=16,
    monitor_rows=64,
    vision_test_rows=160,
    runs=("plain_monitor", "uniform", "selective"),
    overrides=_overrides(),
)


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> dict:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return run_seed(SEED, SMALL, tmp_path_factory.mktemp("miniature"))


def _accuracy(result: dict, model: str, test: str) -> float:
    return result["scores"][model][test]["accuracy"]


def test_uses_the_repository_cpu_flags():
    """The miniature passes swift every flag the other end-to-end tests do (tests/support/swift_runs.py)."""
    from tests.support.swift_runs import CPU_FLAGS as REFERENCE

    ours = dict(zip(CPU_FLAGS[::2], CPU_FLAGS[1::2], strict=True))
    theirs = dict(zip(REFERENCE[::2], REFERENCE[1::2], strict=True))
    theirs.pop("--save_strategy")  # the miniature keeps its last checkpoint: it is measured
    theirs.pop("--logging_steps")
    assert {k: ours.get(k) for k in theirs} == theirs


def test_configs_are_the_shipped_ones_plus_the_monitor():
    """(b) and (c) run plugin_configs/uniform.yaml and selective.yaml; only the monitor section is added."""
    for name, shipped in (("uniform", "uniform"), ("selective", "selective"), ("plain_monitor", "selective")):
        ours = yaml.safe_load((MINIATURE / "configs" / f"{name}.yaml").read_text())
        reference = yaml.safe_load((REPO / "plugin_configs" / f"{shipped}.yaml").read_text())
        assert ours.pop("monitor")["dataset"] == "${MINIATURE_MONITOR_DATASET}"
        if name == "plain_monitor":
            assert ours["loss"].pop("lambda") == 0.0
            reference["loss"].pop("lambda")
        assert ours == reference


def test_the_miniature_reproduces_the_trade_off(miniature):
    """Thresholds from this recipe's measured values on seeds 0, 1, 2 (seed 0 is the one run here; a run is
    deterministic on these CPU machines: two runs of seed 0 gave identical scores):

    seed  original  as built  degraded       (a') plain              (b) uniform  (c) selective
          language  vision    lang   vision  lang   vision lang_kl  vision       lang   vision lang_kl
    0     0.986     0.075     0.297  0.694   0.706  0.688  0.204    0.356        0.794  0.681  0.189
    1     0.993     0.069     0.328  0.594   0.875  0.669  0.073    0.300        0.899  0.675  0.062
    2     0.970     0.019     0.365  0.662   0.804  0.688  0.120    0.512        0.828  0.700  0.118
    """
    result = miniature
    original = _accuracy(result, "original_lm", "language")
    degraded = _accuracy(result, "degraded", "language")
    # The set-up: the LM learned its task (0.97-0.99), stage 2 taught vision (+0.53 to +0.62 over the VLM as built)
    # and cost language (-0.61 to -0.70): real forgetting, each check with a wide margin.
    assert original >= 0.9
    assert _accuracy(result, "degraded", "vision") >= _accuracy(result, "vlm_init", "vision") + 0.4
    assert degraded <= original - 0.5
    # The tags are the intended ones: (c) distils exactly the language rows, (b) every row.
    assert result["tags"]["selective"]["distilled"] == round(
        SMALL.recovery_steps * SMALL.batch_size * SMALL.language_share
    )
    assert result["tags"]["uniform"]["not_distilled"] == 0

    plain, selective = (result["monitor"][run][-1] for run in ("plain_monitor", "selective"))
    # (c) recovers language: +0.46 to +0.57 over the degraded VLM on the three seeds.
    assert _accuracy(result, "selective", "language") >= degraded + 0.3
    # (c) keeps plain fine-tuning's vision (differences -0.007 to +0.012) and uniform distillation loses it
    # (0.19 to 0.38 below (c)): the paper's trade-off, far outside the spread.
    assert _accuracy(result, "selective", "vision") >= _accuracy(result, "plain_monitor", "vision") - 0.05
    assert _accuracy(result, "uniform", "vision") <= _accuracy(result, "selective", "vision") - 0.15
    # The method-specific checks: (c) above plain on language (+0.088 on seed 0, +0.024 on seeds 1-2) and closer to
    # the teacher (lang_kl 2-15 % lower). Strict on purpose: with loss.lambda 0 (the negative control in the
    # module docstring) (c) and (a') are the same training and these two are equalities, so both fail.
    assert _accuracy(result, "selective", "language") > _accuracy(result, "plain_monitor", "language")
    assert selective["lang_kl"] < plain["lang_kl"], (selective, plain)
