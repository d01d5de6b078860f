"""The dataset hook: every row swift loads (local JSONL or registered dataset) gets its tag in ``channel``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..config import LinguDistillConfig
from ..tagging import Tagger
from .run_state import active_tagging, set_active_tagging
from .version import check_swift_version

__all__ = ["extend_dataset_columns", "install_dataset_hook", "tag_dataset", "tagging"]

_HOOK_MARK = "__lingudistill_hook__"


def install_dataset_hook() -> None:
    """Wrap swift's per-dataset routing step so that it also tags the rows (idempotent)."""
    from swift.dataset import loader

    if not hasattr(loader, "_inject_dataset_routing_tag"):
        raise ImportError(
            "ms-swift's dataset loader changed (swift.dataset.loader._inject_dataset_routing_tag is gone); "
            "this swift-lingudistill release cannot tag datasets with it. Fix: install the supported ms-swift."
        )
    original = loader._inject_dataset_routing_tag
    if getattr(original, _HOOK_MARK, False):
        return

    def _inject_dataset_routing_tag(dataset, ds_name):
        dataset = original(dataset, ds_name)
        current = active_tagging()
        if current is None:  # not a LinguDistill run: swift's data as it is
            return dataset
        tagger, num_proc = current
        return tag_dataset(dataset, tagger, num_proc=num_proc)

    setattr(_inject_dataset_routing_tag, _HOOK_MARK, True)
    loader._inject_dataset_routing_tag = _inject_dataset_routing_tag


@contextmanager
def tagging(config: LinguDistillConfig, num_proc: int = 1) -> Iterator[Tagger]:
    """Tag every dataset swift loads inside this block (``tag-report`` uses the training path exactly)."""
    check_swift_version()
    install_dataset_hook()
    extend_dataset_columns(config)
    previous, tagger = active_tagging(), Tagger(config.tagging)
    set_active_tagging((tagger, max(1, num_proc)))
    try:
        yield tagger
    finally:
        set_active_tagging(previous)


def tag_dataset(dataset: Any, tagger: Tagger, num_proc: int = 1) -> Any:
    """Write each row's decision into its ``channel`` (the one per-sample column that survives packing)."""
    from datasets import Dataset as HfDataset

    kwargs: dict[str, Any] = {"with_indices": True, "desc": "LinguDistill tagging"}
    if isinstance(dataset, HfDataset):
        kwargs["num_proc"] = num_proc if len(dataset) >= 2 * num_proc > 2 else None
        kwargs["load_from_cache_file"] = False  # the decision depends on the plugin config, not the data alone
    else:  # IterableDataset: map is lazy and takes no desc / num_proc
        kwargs = {"with_indices": True}
    return dataset.map(tagger.tag_row, **kwargs)


def extend_dataset_columns(config: LinguDistillConfig) -> None:
    """Keep the per-row tag fields through swift's column clean-up so the tagger can read them."""
    from swift.dataset.preprocessor.core import RowPreprocessor

    fields = [config.tagging.explicit_field, *config.tagging.category_fields]
    for name in fields:
        if name and name not in RowPreprocessor.standard_keys:
            RowPreprocessor.standard_keys.append(name)
