"""Tiny random-weight builders for the families only the tests use (Qwen3-VL, LLaVA, Idefics3, Gemma 3).

The Qwen2/2.5(-VL) builders and the demo live in the package (``swift_lingudistill.tiny``): ``build-demo`` needs
them. Each module here builds its family's tokenizer, teacher LM, VLM, processor and a small dataset.
"""
