"""Starting a tiny VLM's language model from a text LM, as real VLMs are built."""

from __future__ import annotations

import torch

__all__ = ["copy_text_lm"]


def copy_text_lm(language_model: torch.nn.Module, head: torch.nn.Module, lm: torch.nn.Module) -> None:
    """A text LM's weights into a VLM's language model and head, as real VLMs start from their LM.

    Embedding and output rows may differ in number (a VLM adds image tokens or pads its vocabulary differently):
    the rows both have are copied, the VLM's others keep their random init.
    """
    source = lm.model.state_dict()
    embed = source.pop("embed_tokens.weight")  # [V_lm, H]
    result = language_model.load_state_dict(source, strict=False)
    if result.missing_keys != ["embed_tokens.weight"] or result.unexpected_keys:
        raise RuntimeError(f"the text LM does not fit the VLM's language model: {result}")
    rows = min(embed.shape[0], language_model.embed_tokens.weight.shape[0])
    with torch.no_grad():
        language_model.embed_tokens.weight[:rows].copy_(embed[:rows])
        head.weight[:rows].copy_(lm.lm_head.weight[:rows])
