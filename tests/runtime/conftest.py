"""Runtime fixtures (defined in `runtime.models`, shared with `tests/test_export.py`)."""

from runtime.models import adapter_a, adapter_b, base, derived, hf, llama, rt_settings

__all__ = ["adapter_a", "adapter_b", "base", "derived", "hf", "llama", "rt_settings"]
