"""In-process tests of one module each (no swift sft subprocess)."""
