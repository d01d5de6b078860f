"""The chunked losses and the divergences against float64 references (values and gradients)."""
