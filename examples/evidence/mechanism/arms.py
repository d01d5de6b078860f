"""The arms: one recovery recipe each, all from the same degraded student on the same rows in the same order.

Every arm's step is the plugin's own trainer step (``plugin_api.SwiftStep``); an arm only changes the plugin
config, the teacher, or (A1, A4) one harness-side switch:

| arm | recipe | controls for |
|---|---|---|
| A0 | plain cross-entropy (``selective.yaml`` with lambda 0: exactly CE, no teacher runs) | baseline |
| A0' | A0 on another order of the same rows | the noise floor |
| A1 | CE with the distilled rows weighted x(1 + lambda) (swift's ``loss_scale``) | more weight on language rows |
| A2 | ``plugin_configs/selective.yaml`` | the method |
| A3 | selective with ``kv_share.scope: none`` | a teacher blind to the image |
| A4 | selective with the image K/V shuffled across the batch's rows | a teacher seeing the wrong image |
| A5 | selective with ``teacher: self`` (frozen copy of the degraded student) | a teacher with nothing to give |
| A6 | ``plugin_configs/uniform.yaml`` | distilling vision rows too (the trade-off) |
| A2@T2, A5@T2 | A2 and A5 at temperature 2 | softened targets as regularisation |
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ARMS", "REWEIGHT_LAMBDA", "Arm", "reweight_scale", "shuffle_image_kv"]


@dataclass(frozen=True)
class Arm:
    name: str
    config: str = "selective"  # shipped plugin config
    overrides: dict[str, Any] = field(default_factory=dict)
    teacher: str = "original"  # original | self (a frozen copy of the degraded student)
    reweight: bool = False  # A1: CE x (1 + lambda * w), no distillation
    shuffle_kv: bool = False  # A4
    order_offset: int = 0  # A0': another data order


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("A0", overrides={"loss.lambda": 0.0}),
        Arm("A0'", overrides={"loss.lambda": 0.0}, order_offset=100),
        Arm("A1", overrides={"loss.lambda": 0.0}, reweight=True),
        Arm("A2"),
        Arm("A3", overrides={"kv_share.scope": "none"}),
        Arm("A4", shuffle_kv=True),
        Arm("A5", teacher="self"),
        Arm("A6", config="uniform"),
        Arm("A2@T2", overrides={"loss.temperature": 2.0}),
        Arm("A5@T2", overrides={"loss.temperature": 2.0}, teacher="self"),
    )
}
REWEIGHT_LAMBDA = 1.0  # A1 weighs the distilled rows' CE by 1 + lambda, lambda of selective.yaml


def reweight_scale(ctx, labels: torch.Tensor) -> torch.Tensor:
    """[B, K] per-token CE weight 1 + lambda * w of the row (swift's ``loss_scale``, cut like the labels)."""
    row_weight = ctx.sample_weight.to(labels.device)[:, None]  # [B, 1]
    return (1.0 + REWEIGHT_LAMBDA * row_weight).expand(labels.shape).contiguous()


def shuffle_image_kv(seed: int):
    """A4's switch: after the student's forward, each image row's captured image K/V are replaced by another
    image row's (a derangement within the batch), so the teacher reads the wrong picture. Text K/V untouched;
    the student's own tensors are not modified (new tensors are handed to the teacher)."""
    rng = random.Random(f"a4-{seed}")

    def between(router, ctx) -> None:
        vision = ctx.vision  # [B, L] bool
        rows = vision.any(dim=1).nonzero().flatten().tolist()
        if len(rows) < 2:
            return
        counts = {int(vision[r].sum()) for r in rows}
        if len(counts) != 1:
            raise ValueError(f"A4 needs the same number of image tokens in every image row, got {sorted(counts)}")
        order = rows[:]
        rng.shuffle(order)
        source = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}  # a cycle: no fixed point
        for layer, (key, value) in list(router.captured.items()):
            new_k, new_v = key.clone(), value.clone()  # [B, Hkv, L, D]
            for row, other in source.items():
                new_k[row][:, vision[row]] = key[other][:, vision[other]]
                new_v[row][:, vision[row]] = value[other][:, vision[other]]
            router.captured[layer] = (new_k, new_v)

    return between
