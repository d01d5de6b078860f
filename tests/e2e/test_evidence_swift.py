"""The evidence harness's in-process arms compute what the real ``swift sft`` computes (examples/evidence).

The harness runs its arms in process for speed (80 runs in minutes), through the plugin's own trainer step
(``mechanism.plugin_api.SwiftStep``). Here one arm's per-step losses are compared with a real ``swift sft`` run
of the same arm on the same checkpoints and the same rows in the same order: A2 (``selective.yaml``,
``--loss_type lingudistill``: loss, ce_loss, kd_loss, distill_frac) and A0 against plain ``swift sft`` (no
plugin at all: swift's own cross-entropy).

Tolerance: measured, the two agree to 1.5e-7 relative on loss and ce_loss and to 6e-6 on the (small) kd_loss
over four steps, although swift's AdamW (transformers' default, fused) and the harness's ``torch.optim.AdamW``
round differently; 1e-5 relative (plus 1e-6 absolute) leaves a margin of about 2x on kd_loss and 60x on the rest,
while a wrong detail (a weight-decay group, the schedule, the batch order, a tag not applied) moves the losses
by 1e-3 or more.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "evidence"))

from mechanism.arms import ARMS  # noqa: E402
from mechanism.batches import Encoder  # noqa: E402
from mechanism.build import Build, _tokenizer_texts  # noqa: E402
from mechanism.data import picture_sample, text_fact_samples  # noqa: E402
from mechanism.models import Sizes, build_vlm, make_lm, save_vlm  # noqa: E402
from mechanism.recovery import RecoveryRecipe, run_arm  # noqa: E402
from mechanism.swift_cli import swift_sft, write_jsonl  # noqa: E402
from mechanism.template import load_template  # noqa: E402
from mechanism.vocab import build_tokenizer  # noqa: E402
from mechanism.world import make_world  # noqa: E402

pytestmark = pytest.mark.slow

STEPS, BATCH, LR = 4, 4, 1e-3
SELECTIVE = "selective"  # the shipped config, by name as users give it


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random original LM, a student VLM made from it with perturbed language weights (so the teacher differs),
    both saved, and 16 mixed rows (vision, picture+knowledge, facts) in one fixed order."""
    root = tmp_path_factory.mktemp("evidence_swift")
    world = make_world(0)
    tokenizer, rows = build_tokenizer(_tokenizer_texts(world))
    sizes = Sizes()
    lm = make_lm(sizes, rows, 0).eval()
    vlm = build_vlm(lm, sizes, 0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in vlm.model.language_model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    lm_dir, vlm_dir = root / "original_lm", root / "student"
    lm.save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    save_vlm(vlm, tokenizer, vlm_dir)
    encoder = Encoder(load_template(vlm_dir))
    encoder.template.model = vlm
    rng = random.Random(0)
    samples = [picture_sample(t, rng, world) for t in ("colour", "count", "flag_of_shape", "digit_plus") * 2]
    samples += text_fact_samples(world, world.countries[:2], [(1, 2), (3, 4)], phrasing=0)
    rng.shuffle(samples)
    encoded = encoder.encode(samples[: STEPS * BATCH])
    batches = [encoder.collate(encoded[i : i + BATCH]) for i in range(0, STEPS * BATCH, BATCH)]
    dataset = write_jsonl([e for b in batches for e in b.rows], root / "rows.jsonl")
    build = Build(0, world, encoder, lm, vlm.eval(), {}, {}, {}, root)
    return {"root": root, "build": build, "batches": batches, "dataset": dataset, "lm_dir": lm_dir, "vlm_dir": vlm_dir}


def _in_process(setup, arm: str) -> list[dict]:
    recipe = RecoveryRecipe(steps=STEPS, batch_size=BATCH, lr=LR, warmup_ratio=0.0)
    return run_arm(setup["build"], ARMS[arm], setup["batches"], recipe, unit="test")["log"]


def _swift(setup, name: str, lingudistill: bool) -> list[dict]:
    env = {"LINGUDISTILL_CONFIG": SELECTIVE, "LINGUDISTILL_TEACHER": str(setup["lm_dir"])} if lingudistill else {}
    extra = ["--loss_type", "lingudistill", "--save_strategy", "no"] if lingudistill else ["--save_strategy", "no"]
    result = swift_sft(
        setup["vlm_dir"], setup["dataset"], setup["root"] / name, steps=STEPS, batch_size=BATCH, lr=LR,
        lingudistill=lingudistill, extra=extra, env=env,
    )  # fmt: skip
    steps = result.steps()
    assert len(steps) == STEPS, result.output[-3000:]
    return steps


def _close(ours: float, theirs: float, step: int) -> None:
    assert abs(ours - theirs) <= 1e-5 * abs(theirs) + 1e-6, (step, ours, theirs)


def test_selective_arm_equals_swift_sft_with_the_plugin(setup):
    ours, theirs = _in_process(setup, "A2"), _swift(setup, "a2", lingudistill=True)
    assert any(step["kd_loss"] for step in ours)  # the teacher differs from the student: a real distillation term
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for key in ("loss", "ce_loss", "kd_loss", "distill_frac"):
            if b.get(key) is None:
                assert a[key] is None, (i, key)
            else:
                _close(a[key], b[key], i)


def test_plain_arm_equals_plain_swift_sft(setup):
    ours, theirs = _in_process(setup, "A0"), _swift(setup, "a0", lingudistill=False)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        _close(a["loss"], b["loss"], i)
