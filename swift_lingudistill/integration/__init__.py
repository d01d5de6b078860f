"""The one subpackage that touches ms-swift; everything outside it is plain torch and transformers.

One module per job (see docs/ARCHITECTURE.md for the import graph):
``version`` (the supported ms-swift range), ``run_state`` (the leaf that carries one run's state),
``registration`` (the loss type, the monitor callback and swift's hooks), ``activation`` (every check before
a model loads), ``preflight`` and ``dataset_scan`` (the checks over the data and the teacher's weights),
``flag_checks``, ``teacher_resolution``, ``teacher_loading``, ``resume``, ``dataset_tagging``, ``row_guard``,
``redaction``, ``trainer`` (the trainer and loss glue), ``monitor`` and ``tag_report``.

Importing the subpackage checks the installed ms-swift first, so an unsupported version stops with the fix
before any of swift's internals are imported.
"""

from .version import check_swift_version

check_swift_version()
