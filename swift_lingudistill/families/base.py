"""What LinguDistill needs to know about one VLM family, in one small adapter class."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..rope_rebase import RotaryInfo, frequency_positions

__all__ = ["FamilyAdapter", "LineageSpec", "lineage_of", "unwrap_model"]


class LineageSpec(dict):
    """The architecture numbers a teacher must share with the student's language model (name -> value).

    ``rotary`` (an attribute, not a compared row) holds what the rotary embedding depends on, so the lineage
    check can tell a rotary difference that re-basing removes exactly from one it cannot.
    """

    rotary: RotaryInfo | None = None


def _rope_theta(config: Any) -> float | str | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    if isinstance(params, dict) and params and all(isinstance(p, dict) for p in params.values()):
        # One rotary embedding per layer type (Gemma 3: a local base for sliding layers, a global one for full).
        parts = []
        for name, p in sorted(params.items()):
            if p.get("rope_theta") is None:
                return None
            kind = p.get("rope_type", "default")
            scaling = "" if kind == "default" else f" {kind} x{float(p.get('factor', 1.0)):g}"
            parts.append(f"{name}={float(p['rope_theta']):g}{scaling}")
        return ", ".join(parts)
    theta = getattr(config, "rope_theta", None)
    return None if theta is None else float(theta)


def lineage_of(text_config: Any) -> LineageSpec:
    """Read the lineage numbers from a transformers text config (student's or teacher's)."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    eps = getattr(text_config, "rms_norm_eps", None)
    if eps is None:
        eps = getattr(text_config, "layer_norm_eps", None)
    spec = LineageSpec(
        layers=text_config.num_hidden_layers,
        hidden_size=text_config.hidden_size,
        attention_heads=heads,
        kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
        head_size=head_dim,
        rotary_base=_rope_theta(text_config),
        rotary_scaling=_rope_scaling(text_config),
        norm_eps=eps,
        sliding_window=_sliding_window(text_config),
    )
    spec.rotary = RotaryInfo.from_config(text_config)
    return spec


def _rope_scaling(config: Any) -> str | None:
    """The RoPE scaling kind and factor (llama3, yarn, ...): a different one rotates keys differently."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default")) if isinstance(params, dict) else "default"
    if kind in (None, "default", "mrope"):  # M-RoPE's sections are the student's, not a frequency change
        return None
    return f"{kind} x{params.get('factor')}"


def _sliding_window(config: Any) -> str | None:
    """'<window> <pattern>' (S = sliding, F = full attention, per layer) when any layer slides, else None."""
    layer_types = list(getattr(config, "layer_types", None) or ())
    window = getattr(config, "sliding_window", None)
    if window is None or "sliding_attention" not in layer_types:
        return None
    return f"{int(window)} {''.join('S' if t == 'sliding_attention' else 'F' for t in layer_types)}"


class FamilyAdapter:
    """How to reach a VLM family's language model, its vision positions and its rotary positions.

    Subclasses set ``swift_model_types`` (ms-swift ``model_type`` values) and ``hf_model_types``
    (``config.model_type`` values) and override what differs. Adding a family is one new file.
    """

    name: str = "base"
    swift_model_types: tuple[str, ...] = ()
    hf_model_types: tuple[str, ...] = ()

    # --- configs -----------------------------------------------------------------------------------
    def text_config(self, config: Any) -> Any:
        """The student's language-model config (what the teacher's config is compared with)."""
        return getattr(config, "text_config", config)

    def lineage(self, config: Any) -> LineageSpec:
        return lineage_of(self.text_config(config))

    def check_teacher_config(self, config: Any) -> None:
        """Refuse a separate teacher's config this family cannot reproduce, before its weights load."""

    def vision_token_ids(self, config: Any) -> tuple[int, ...]:
        """Token ids the vision tower's features replace; their K/V are always shared."""
        ids = [getattr(config, k, None) for k in ("image_token_id", "video_token_id", "image_token_index")]
        return tuple(int(i) for i in ids if i is not None)

    # --- modules -----------------------------------------------------------------------------------
    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack of the student (embeddings, layers, final norm), below any PEFT wrapper."""
        raise NotImplementedError

    def lm_head(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).lm_head

    def attention_modules(self, decoder: nn.Module) -> list[nn.Module]:
        """One attention module per layer, in layer order."""
        return [layer.self_attn for layer in decoder.layers]

    # --- batches -----------------------------------------------------------------------------------
    def vision_mask(self, input_ids: torch.Tensor, config: Any) -> torch.Tensor:
        """[B, L] bool: positions holding vision features."""
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self.vision_token_ids(config):
            mask |= input_ids == token_id
        return mask

    def check_batch(self, batch: dict[str, Any], model: nn.Module) -> None:
        """Stop on a batch the student would silently misread (e.g. image tokens not matching its features)."""

    def rotary_positions(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
        """[B, L] long: the rotary position the student gave each token; the teacher must use the same."""
        position_ids = batch.get("position_ids")
        if position_ids is not None:
            return position_ids
        input_ids = batch["input_ids"]
        return torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)

    # --- rotary re-basing (rope_rebase.py) ------------------------------------------------------------------
    def rotary_components(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
        """[C, B, L] long: the components of each token's rotary position (C = 1 for 1-D RoPE, 3 for M-RoPE)."""
        return self.rotary_positions(batch, model)[None]

    def frequency_components(self, config: Any, n_freq: int) -> torch.Tensor:
        """[F] long: which component of ``rotary_components`` each rotary frequency turns by (1-D RoPE: all 0)."""
        return torch.zeros(n_freq, dtype=torch.long)

    def frequency_positions(self, batch: dict[str, Any], model: nn.Module, n_freq: int) -> torch.Tensor:
        """[B, L, F] long: the position each rotary frequency of each token was turned by in the student."""
        components = self.frequency_components(unwrap_model(model).config, n_freq)
        return frequency_positions(self.rotary_components(batch, model), components)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model under DDP / DeepSpeed (``.module``) and PEFT (``get_base_model()``) wrappers."""
    for _ in range(4):
        if hasattr(model, "get_base_model"):  # peft.PeftModel
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):  # DDP, DeepSpeedEngine
            model = model.module
        else:
            break
    return model
