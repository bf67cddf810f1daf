"""Opening a GGUF model with llama.cpp, safely on every x86 machine.

llama.cpp repacks quantized weights into "extra" buffer types for the CPU it was built on. Its
AMX kernels (Intel Sapphire Rapids and later) crash with a segmentation fault on the first
batch of more than one token on some machines, virtual machines in particular (llama.cpp issue
20824; Rune's own test suite hit it on a virtualised Xeon). A crash takes the whole MCP server
down, so when the build reports AMX, Rune loads the weights without the extra buffer types:
llama.cpp then runs its AVX-512 kernels, which are correct everywhere.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_lock = threading.Lock()


@functools.cache
def has_amx() -> bool:
    """Whether this llama.cpp build runs AMX kernels on this CPU (`AMX_INT8 = 1`)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


def open_llama(model_path: str, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(model_path, **kwargs)`, without AMX weight buffers where they crash."""
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    if not has_amx():
        return Llama(model_path=model_path, **kwargs)
    # Llama() builds its model parameters inside __init__ with no argument for this field, so
    # the defaults function is wrapped for the duration of the call (under a lock: it is a
    # module attribute).
    with _lock:
        original = low.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = without_extra_buffers
        try:
            return Llama(model_path=model_path, **kwargs)
        finally:
            low.llama_model_default_params = original
