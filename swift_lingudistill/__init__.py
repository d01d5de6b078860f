"""swift-lingudistill: LinguDistill (selective cross-modal distillation) for ms-swift VLM fine-tuning.

The core (``config``, ``tagging``, ``divergences``, ``losses``, ``kv_share``, ``teacher``, ``distiller``,
``families``) is plain torch and transformers and never imports ms-swift; ``integration/`` is the one
subpackage that does, loaded by ``plugin_entry/swift_lingudistill_plugin.py`` (the file ``--external_plugins``
takes, alone in its folder). The import graph
is drawn in docs/ARCHITECTURE.md; the method in docs/METHOD.md.
"""

from .config import ConfigError, LinguDistillConfig, load_config

__version__ = "0.1.0"

__all__ = ["ConfigError", "LinguDistillConfig", "__version__", "load_config", "plugin_path"]


def plugin_path() -> str:
    """Absolute path of the thin plugin file to pass to ``swift sft --external_plugins``."""
    from pathlib import Path

    # Alone in its folder: swift puts that folder first on sys.path (see the file's docstring).
    return str(Path(__file__).resolve().parent / "plugin_entry" / "swift_lingudistill_plugin.py")
