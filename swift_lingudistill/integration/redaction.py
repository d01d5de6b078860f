"""Values read from ``${VAR}`` never reach swift's log: each record shows the variable's name instead.

A config may take a private path or a token from the environment. The plugin writes ``${VAR}`` in its own
lines and saved files (``config.dump_config``); this filter covers the lines swift writes about what the
plugin hands it (e.g. swift's loader naming the teacher's folder).
"""

from __future__ import annotations

import logging

from ..config import LinguDistillConfig

__all__ = ["redact_logs"]

_SHORTEST = 4  # shorter values ('1', 'cpu') would blank out ordinary words


class _Redact(logging.Filter):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__("lingudistill-redact")
        self.pairs = pairs  # (value, shown instead), longest value first

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for value, shown in self.pairs:
            redacted = redacted.replace(value, shown)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_logs(config: LinguDistillConfig, resolved: dict[str, str] | None = None) -> None:
    """Install (or replace) the filter on swift's logger for this run's ``${VAR}`` values.

    ``resolved`` adds forms a value took later, as 'section.field' -> text (the teacher's resolved folder).
    """
    from swift.utils import get_logger

    pairs: dict[str, str] = {}
    values = config.model_dump(by_alias=True)
    for path, template in config.env_refs.items():
        section, _, key = path.partition(".")
        value = values.get(section, {}).get(key) if isinstance(values.get(section), dict) else None
        for text in (value, (resolved or {}).get(path)):
            if isinstance(text, str) and len(text) >= _SHORTEST and text != template:
                pairs[text] = template
    logger = get_logger()
    for old in [f for f in logger.filters if isinstance(f, _Redact)]:
        logger.removeFilter(old)
    if pairs:
        logger.addFilter(_Redact(sorted(pairs.items(), key=lambda p: -len(p[0]))))
