"""The harness's quick mode for ``make demo``: one unit, trained by the real ``swift sft`` (examples/demo.sh).

    python examples/evidence/demo.py prepare --out demo_assets      # original LM, degraded VLM, recovery rows
    python examples/evidence/demo.py score --out demo_assets --run plain=CKPT --run selective=CKPT

``prepare`` builds one unit's models in process (the experiment's stages 1-4 at a quicker recipe) and saves
what ``swift sft`` needs: the original LM (the teacher), the degraded VLM (the student) and the recovery rows
(JSONL, in one order). ``score`` prints language and vision accuracy of the degraded VLM and of each checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
for _key, _value in {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                     "TRANSFORMERS_OFFLINE": "1", "USE_HF": "1"}.items():  # fmt: skip
    os.environ.setdefault(_key, _value)

DEMO_SEED = 7  # neither a pilot nor a confirmatory build
COLUMNS = (
    ("held_out_facts", "language: held-out facts"),
    ("seen_facts", "language: facts in the recovery data"),
    ("image_knowledge", "image + knowledge"),
    ("vision", "vision"),
)


def prepare(out: Path, seed: int) -> None:
    import torch
    from mechanism.build import BuildRecipe, build_models
    from mechanism.gate import measure_gate
    from mechanism.models import save_vlm
    from mechanism.recovery import RecoveryRecipe, recovery_rows, unit_batches
    from mechanism.swift_cli import write_jsonl

    torch.set_num_threads(1)
    build = build_models(seed, BuildRecipe.quick(), out / "build", print)
    gate = measure_gate(build)["image_knowledge"]
    reads, blind, own = (100 * gate[k]["accuracy"] for k in ("teacher_reads_image_kv", "teacher_blind", "student"))
    print(f"   gate: on picture+knowledge rows the original LM reading the degraded VLM's image K/V scores "
          f"{reads:.0f} %, with the image masked {blind:.0f} % (the degraded VLM itself: {own:.0f} %)")  # fmt: skip
    tokenizer = build.encoder.tokenizer
    build.lm.save_pretrained(out / "original_lm")
    tokenizer.save_pretrained(out / "original_lm")
    save_vlm(build.degraded, tokenizer, out / "degraded_vlm")
    recipe = RecoveryRecipe()
    encoded = build.encoder.encode(recovery_rows(build, recipe))
    batches = unit_batches(encoded, build, 0, recipe.batch_size)
    write_jsonl([e for b in batches for e in b.rows], out / "data" / "recovery.jsonl")
    state = {"seed": seed, "steps": len(batches), "batch_size": recipe.batch_size, "lr": recipe.lr,
             "warmup_ratio": recipe.warmup_ratio}  # fmt: skip
    (out / "demo.json").write_text(json.dumps(state))


def score(out: Path, runs: list[tuple[str, Path]]) -> None:
    import torch
    from mechanism.batches import Encoder
    from mechanism.build import BuildRecipe, eval_sets
    from mechanism.evaluate import score as score_set
    from mechanism.evaluate import student_logits
    from mechanism.template import load_template
    from mechanism.world import make_world

    torch.set_num_threads(1)
    from transformers import Qwen2_5_VLForConditionalGeneration

    seed = json.loads((out / "demo.json").read_text())["seed"]
    recipe = BuildRecipe.quick()
    world = make_world(seed, recipe.per_colour, recipe.seen_per_colour)
    rows = []
    for name, folder in [("degraded VLM (start)", out / "degraded_vlm"), *runs]:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        encoder = Encoder(load_template(folder))
        encoder.template.model = model
        sets = eval_sets(world, encoder, seed, recipe.eval_pictures)
        rows.append((name, {key: score_set(sets[key], encoder, student_logits(model)).accuracy for key, _ in COLUMNS}))
    print("| model | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, acc in rows:
        print(f"| {name} | " + " | ".join(f"{100 * acc[key]:.1f} %" for key, _ in COLUMNS) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "score"))
    parser.add_argument("--out", type=Path, default=Path("demo_assets"))
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--run", action="append", default=[], help="NAME=CHECKPOINT (score)")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out, args.seed)
    else:
        score(args.out, [(r.split("=", 1)[0], Path(r.split("=", 1)[1])) for r in args.run])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
