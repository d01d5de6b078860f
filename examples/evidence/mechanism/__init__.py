"""The evidence harness: builds, arms, gate, statistics (see examples/evidence/README.md)."""
