"""Teacher forward time: compact (only the positions the loss needs) vs full sequence, as images grow.

The student's per-layer K/V are given (random, the right shapes); the teacher is a random Qwen2 LM. Each row
is ``[prompt][image block][question][answer]`` with the answer supervised; the image block takes 0%, 50% or
90% of the sequence. The full-sequence teacher computes every position (its K/V replaced at the image); the
compact one computes only its own positions up to the last answer token and the answer's logit positions.
Both give the same logits (docs/METHOD.md invariant 4, tested in tests/families/test_invariants.py).

    python benchmarks/bench_teacher.py                       # L = 2048, batch 2, hidden 512, 8 layers
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from swift_lingudistill.config import config_from_dict
from swift_lingudistill.distiller import BatchContext, Distiller
from swift_lingudistill.families import family_for
from swift_lingudistill.kv_share import ROUTER
from swift_lingudistill.teacher import separate_teacher
from swift_lingudistill.tiny import TinySize, make_qwen2_lm

IMAGE_ID = 151655


def batch(seq_len: int, rows: int, image_share: float, answer_share: float) -> BatchContext:
    """Rows of [8 prompt tokens][image][question][answer]; labels on the answer."""
    n_image = int(seq_len * image_share)
    n_answer = max(1, int(seq_len * answer_share))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 150000, (rows, seq_len), generator=gen)
    ids[:, 8 : 8 + n_image] = IMAGE_ID
    labels = torch.full_like(ids, -100)
    labels[:, seq_len - n_answer :] = ids[:, seq_len - n_answer :]
    ones = torch.ones(rows)
    return BatchContext(
        input_ids=ids,
        labels=labels,
        valid=torch.ones_like(ids, dtype=torch.bool),
        rotary=torch.arange(seq_len).expand(rows, seq_len),
        vision=ids == IMAGE_ID,
        token_weight=ones[:, None].expand(rows, seq_len),
        sample_weight=ones,
    )


def time_teacher(distiller: Distiller, ctx: BatchContext, repeats: int) -> float:
    needed = torch.roll(ctx.labels, -1, dims=1) != -100  # positions whose logit the loss reads
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            distiller.teacher_hidden(ctx, needed)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--answer-share", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    size = TinySize(hidden=args.hidden, layers=args.layers, heads=8, kv_heads=2, intermediate=args.hidden * 3)
    model = make_qwen2_lm(size, seed=0)
    teacher = separate_teacher(model, "bench")
    family = family_for("qwen2_5_vl")
    config = config_from_dict({"teacher": {"model": "bench"}})
    head_dim = size.hidden // 8
    print(
        f"teacher forward (hidden states), CPU: L={args.seq_len}, batch {args.rows}, hidden {args.hidden}, "
        f"{args.layers} layers, answer {args.answer_share:.0%} of the sequence; median of {args.repeats}"
    )
    print(f"{'image share':>11} | {'full s':>8} {'compact s':>9} {'ratio':>6} | {'positions computed':>18}")
    print("-" * 62)
    for share in (0.0, 0.5, 0.9):
        ctx = batch(args.seq_len, args.rows, share, args.answer_share)
        results = {}
        for compact in (False, True):
            distiller = Distiller(
                config, family, teacher, shared_vocab=size.vocab, student_attention=[], compact=compact
            )
            # The student's captured K/V: what its forward would leave in the router.
            ROUTER.bind([torch.nn.Identity() for _ in range(args.layers)], teacher.attention_modules(family))
            kv = torch.randn(args.rows, 2, args.seq_len, head_dim)
            ROUTER.captured = {layer: (kv, kv) for layer in range(args.layers)}
            time_teacher(distiller, ctx, 1)  # warm-up
            results[compact] = time_teacher(distiller, ctx, args.repeats)
        own = int((~ctx.vision[0]).sum())
        print(
            f"{share:>11.0%} | {results[False]:>8.3f} {results[True]:>9.3f} {results[True] / results[False]:>6.2f} | "
            f"{own:>7} of {args.seq_len:<8}"
        )


if __name__ == "__main__":
    main()
