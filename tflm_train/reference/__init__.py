"""Pure-numpy reference executor of tflm-train graphs (see executor.Executor).

Importing the package registers the builtin kernels and, when present, the
training ops' kernels from `tflm_train.kernels_grad`.
"""
import importlib
import importlib.util
import pkgutil

from tflm_train.reference import builtins as _builtins  # noqa: F401  (registers builtin kernels)
from tflm_train.reference.executor import Executor
from tflm_train.reference.registry import KERNELS, kernel


def _import_training_kernels() -> None:
    # Training-op kernels register themselves with @kernel wherever they live in the package.
    if importlib.util.find_spec("tflm_train.kernels_grad") is None:
        return
    package = importlib.import_module("tflm_train.kernels_grad")
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)


_import_training_kernels()

__all__ = ["Executor", "KERNELS", "kernel"]
