"""Name → numpy kernel table of the reference executor.

Builtins register under their schema name ("CONV_2D"), training ops under their
custom code ("TFLT_SOFTMAX_XENT"). A kernel is `fn(op, args) -> outputs`:
`args` holds the current value of each of `op.inputs` (None where an optional
input is absent) and the result is one array per `op.outputs`. Variable tensors
arrive as the executor's persistent arrays, so a kernel updates them in place.
"""
from __future__ import annotations

from typing import Callable

KERNELS: dict[str, Callable] = {}


def kernel(kind: str):
    """Decorator registering `fn` as the reference kernel of op kind `kind`."""
    def register(fn: Callable) -> Callable:
        existing = KERNELS.get(kind)
        # Re-importing the same module re-registers the same function: harmless.
        if existing is not None and _qualified(existing) != _qualified(fn):
            raise ValueError(f"two reference kernels for {kind}: {_qualified(existing)} and {_qualified(fn)}")
        KERNELS[kind] = fn
        return fn
    return register


def _qualified(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
