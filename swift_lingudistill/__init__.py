"""swift-lingudistill: LinguDistill (selective cross-modal distillation) for ms-swift VLM fine-tuning.

The math (``losses``, ``kv_share``, ``distiller``) is plain torch; ``integration`` is the only module that
touches ms-swift's registries, and is imported by ``swift_plugin.py`` (the file ``--external_plugins`` takes).
"""

from .config import ConfigError, LinguDistillConfig, load_config

__version__ = "0.1.0"

__all__ = ["ConfigError", "LinguDistillConfig", "__version__", "load_config", "plugin_path"]


def plugin_path() -> str:
    """Absolute path of the thin plugin file to pass to ``swift sft --external_plugins``."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "swift_plugin.py")
