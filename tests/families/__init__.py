"""Every supported VLM family: the shared invariants and what is specific to each, on tiny models."""
