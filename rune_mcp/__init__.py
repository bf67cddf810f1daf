"""Rune: memory for coding agents that lives in LoRA weights instead of the context window."""

__version__ = "0.1.0"
