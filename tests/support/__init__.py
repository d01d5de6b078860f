"""What the tests share: tiny models and batches, the family cases, the loss reference, ``swift sft`` runs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root
