"""The frozen teacher: lineage and vocabulary checks, and the runner the distiller drives.

Two kinds of teacher run the same way (a decoder stack plus an output layer):
- a separate text-only LM checkpoint (the paper's setting), frozen, in eval mode;
- ``self``: the student's own language model as it was at the start of training. With LoRA this is the
  base model with the adapters disabled (no extra memory); with full fine-tuning, a frozen copy.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from .families import FamilyAdapter, LineageSpec, lineage_of
from .rope_rebase import RotaryPlan, reconcile_rotary

__all__ = [
    "LineageError",
    "TeacherModule",
    "TeacherRunner",
    "VocabularyError",
    "check_lineage",
    "frozen_copy_teacher",
    "lora_self_teacher",
    "reloaded_self_teacher",
    "separate_teacher",
    "shared_vocabulary",
]

logger = logging.getLogger(__name__)


class LineageError(ValueError):
    """The teacher is not the LM the student's language model was built from (architectures differ)."""


class VocabularyError(ValueError):
    """Student and teacher tokenizers give different tokens for the same id."""


_ROTARY_ROWS = {"rotary_base", "rotary_scaling"}


def check_lineage(
    student: LineageSpec,
    teacher: LineageSpec,
    teacher_name: str = "teacher",
    *,
    rebase_rotary: bool = False,
    max_length: int | None = None,
) -> RotaryPlan:
    """Stop with every mismatch listed: KV sharing needs identical layers, heads, head size and rotary embedding.

    A difference in the rotary rows alone is accepted when it changes nothing up to ``max_length`` (dynamic NTK
    below its threshold) or, with ``rebase_rotary``, when re-basing the shared keys removes it exactly; the returned
    plan says which (``rebase``) and why (``note``).
    """
    rows = [(k, student.get(k), teacher.get(k)) for k in student]
    mismatches = [(k, s, t) for k, s, t in rows if not _same(s, t)]
    if not mismatches:
        return RotaryPlan()
    reason = ""
    if {k for k, _, _ in mismatches} <= _ROTARY_ROWS:
        plan = reconcile_rotary(
            getattr(student, "rotary", None),
            getattr(teacher, "rotary", None),
            rebase_enabled=rebase_rotary,
            max_length=max_length,
        )
        if plan.refusal is None:
            return plan
        reason = f"\nRotary embeddings: {plan.refusal}."
    table = "\n".join(f"    {k:<16} student {s!s:<14} teacher {t!s}" for k, s, t in mismatches)
    raise LineageError(
        f"The teacher {teacher_name!r} does not match the student's language model:\n{table}\n"
        "LinguDistill shares keys/values layer by layer, so the teacher must be the text-only LM the VLM's "
        "language model was initialised from (e.g. Qwen2.5-7B-Instruct for Qwen2.5-VL-7B-Instruct). "
        f"Fix: set teacher.model to that checkpoint, or use `model: self`.{reason}"
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def shared_vocabulary(student_tokenizer: Any, teacher_tokenizer: Any, student_rows: int, teacher_rows: int) -> int:
    """The number of leading token ids both models score; refuse when a shared id means different tokens.

    VLMs often append tokens the LM lacks (LLaVA's ``<image>``) or pad the embedding differently, so the
    distillation compares only ids below both output sizes that both tokenizers define identically.
    """
    size = min(student_rows, teacher_rows)
    s_vocab = {i: t for t, i in student_tokenizer.get_vocab().items() if i < size}
    t_vocab = {i: t for t, i in teacher_tokenizer.get_vocab().items() if i < size}
    both = s_vocab.keys() & t_vocab.keys()
    differ = sorted(i for i in both if s_vocab[i] != t_vocab[i])
    if differ:
        examples = ", ".join(f"id {i}: student {s_vocab[i]!r} vs teacher {t_vocab[i]!r}" for i in differ[:5])
        raise VocabularyError(
            f"Student and teacher tokenizers disagree on {len(differ)} of {len(both)} shared token ids "
            f"({examples}). Distilling would compare different tokens. Fix: use the teacher the VLM was built "
            "from, with its original tokenizer."
        )
    only_one = len(s_vocab.keys() ^ t_vocab.keys())
    if only_one:
        logger.warning(
            "LinguDistill: %d token ids below %d are defined by only one of the two tokenizers; "
            "they are compared as untrained rows.",
            only_one,
            size,
        )
    return size


class TeacherRunner:
    """A decoder stack plus an output layer, run frozen on the positions the plan asks for."""

    def __init__(
        self,
        decoder: nn.Module,
        head: nn.Module,
        *,
        vocab_rows: int,
        adapters_off: Any = None,
        description: str = "teacher",
    ) -> None:
        self.decoder = decoder
        self.head = head
        self.vocab_rows = vocab_rows
        self._adapters_off = adapters_off  # a PeftModel whose adapters are disabled while the teacher runs
        self.description = description
        self.offload_device: torch.device | None = None  # set: weights live on CPU, visit this device to run
        self.placement: str | None = None  # how the run placed it, for the log

    @property
    def shares_student_weights(self) -> bool:
        """True for the LoRA ``self`` teacher: its modules are the student's own, placed with the student."""
        return self._adapters_off is not None

    def attention_modules(self, family: FamilyAdapter) -> list[nn.Module]:
        return family.attention_modules(self.decoder)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Eval mode (no dropout, no gradient checkpointing whose recompute would bypass the router)."""
        with ExitStack() as stack:
            if self._adapters_off is not None:
                stack.enter_context(self._adapters_off.disable_adapter())
            if self.offload_device is not None:
                # The decoder only: the head (vocab x hidden, the largest block) visits once, in head_weights().
                stack.enter_context(_visiting([self.decoder], self.offload_device))
            modes = [(m, m.training) for m in (self.decoder, self.head)]
            for module, _ in modes:
                module.eval()
            try:
                yield
            finally:
                for module, training in modes:
                    module.train(training)

    def modules(self) -> list[nn.Module]:
        return [self.decoder, self.head]

    def offload(self, device: torch.device) -> None:
        """Keep the weights in CPU memory; each forward (and the head in the loss) brings them to ``device``."""
        self.offload_device = torch.device(device)
        _move(self.modules(), torch.device("cpu"))

    @contextmanager
    def head_weights(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight, bias) of the output layer, whole even when DeepSpeed ZeRO-3 shards it, on the compute device."""
        params = [p for p in (self.head.weight, getattr(self.head, "bias", None)) if p is not None]
        with ExitStack() as stack:
            if any(hasattr(p, "ds_id") for p in params):
                import deepspeed

                stack.enter_context(deepspeed.zero.GatheredParameters(params, modifier_rank=None))
            if self.offload_device is not None:
                stack.enter_context(_visiting([self.head], self.offload_device))
            yield self.head.weight, getattr(self.head, "bias", None)

    def hidden_states(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B', Lq] ids and rotary positions -> [B', Lq, H] final hidden states (after the final norm).

        Call it inside ``active()``. Ids the teacher's vocabulary lacks (vision placeholders) are clamped: their
        K/V come from the student, so what the teacher computes there is never read.
        """
        ids = input_ids.clamp(max=self.vocab_rows - 1)
        out = self.decoder(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def text_hidden_states(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The plain text LM's forward (nothing shared): [B, L] -> [B, L, H], e.g. for text-only held-out rows."""
        with self.active():
            return self.hidden_states(input_ids, position_ids, attention_mask)


def _rows(weight: torch.Tensor) -> int:
    """Output rows of a head, also when DeepSpeed ZeRO-3 has sharded it (its local shape is then empty)."""
    return int(weight.ds_shape[0]) if hasattr(weight, "ds_shape") else int(weight.shape[0])


class TeacherModule(nn.Module):
    """Decoder and head in one module, so DeepSpeed can place a teacher that is not a whole checkpoint."""

    def __init__(self, decoder: nn.Module, head: nn.Module, config: Any) -> None:
        super().__init__()
        self.decoder, self.head, self.config = decoder, head, config


def reloaded_self_teacher(model: nn.Module, family: FamilyAdapter) -> TeacherRunner:
    """``self`` with full fine-tuning from a second load of the student's checkpoint (ZeRO-3 shards cannot be
    deep-copied): its language model and head, frozen; the rest of the reload is dropped."""
    decoder = _freeze(family.language_model(model))
    head = _freeze(family.lm_head(model))
    return TeacherRunner(decoder, head, vocab_rows=_rows(head.weight), description="self (frozen reload)")


def _move(modules: list[nn.Module], device: torch.device) -> None:
    """Move parameters and buffers in place (ZeRO-3 keeps a shard in ``ds_tensor``: that is what moves)."""
    for module in modules:
        for param in module.parameters():
            if hasattr(param, "ds_tensor"):
                param.ds_tensor.data = param.ds_tensor.data.to(device, non_blocking=True)
            else:
                param.data = param.data.to(device, non_blocking=True)
        for buffer in module.buffers():
            buffer.data = buffer.data.to(device, non_blocking=True)


@contextmanager
def _visiting(modules: list[nn.Module], device: torch.device) -> Iterator[None]:
    """Bring offloaded weights to ``device`` for the block, then back to CPU."""
    _move(modules, device)
    try:
        yield
    finally:
        _move(modules, torch.device("cpu"))


def _freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


def separate_teacher(model: nn.Module, description: str) -> TeacherRunner:
    """A text-only causal LM checkpoint (``XxxForCausalLM``) as the teacher."""
    _freeze(model)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    return TeacherRunner(decoder, head, vocab_rows=_rows(head.weight), description=description)


def lora_self_teacher(peft_model: nn.Module, family: FamilyAdapter) -> TeacherRunner:
    """``self`` with LoRA: the student's base language model, adapters disabled while it runs."""
    decoder = family.language_model(peft_model)
    head = family.lm_head(peft_model)
    return TeacherRunner(
        decoder,
        head,
        vocab_rows=_rows(head.weight),
        adapters_off=peft_model,
        description="self (base model, LoRA adapters disabled)",
    )


def frozen_copy_teacher(model: nn.Module, family: FamilyAdapter) -> TeacherRunner:
    """``self`` with full fine-tuning: a frozen copy of the language model taken before training."""
    decoder = _freeze(copy.deepcopy(family.language_model(model)))
    head = _freeze(copy.deepcopy(family.lm_head(model)))
    decoder.gradient_checkpointing = False
    return TeacherRunner(decoder, head, vocab_rows=_rows(head.weight), description="self (frozen copy)")


def teacher_lineage(config: Any) -> LineageSpec:
    """Lineage numbers of a text-only teacher config."""
    return lineage_of(getattr(config, "text_config", config))
