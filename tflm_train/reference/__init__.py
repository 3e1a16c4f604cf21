"""Pure-numpy reference executor of tflm-train graphs (see executor.Executor).

Importing the package registers the builtin kernels and, when present, the
training ops' kernels (`tflm_train.kernels_grad`, whose import registers them).
"""
import importlib
import importlib.util

from tflm_train.reference import builtins as _builtins  # noqa: F401  (registers builtin kernels)
from tflm_train.reference.executor import Executor
from tflm_train.reference.registry import KERNELS, kernel

# Last, so the training kernels find this package's modules complete.
if importlib.util.find_spec("tflm_train.kernels_grad") is not None:
    importlib.import_module("tflm_train.kernels_grad")

__all__ = ["Executor", "KERNELS", "kernel"]
