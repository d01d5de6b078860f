"""The test suite: ``unit`` (in-process, one module each), ``families`` (every supported VLM family's invariants
and specifics on tiny models), ``e2e`` (the real ``swift sft`` and friends); shared code in ``support``."""
