"""Compiling micro/ C++ for the tests: the kernel flags, and ctypes shared libraries."""
from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "micro"
CORE_SOURCES = sorted((MICRO / "core").glob("*.cc"))
KERNEL_SOURCES = sorted((MICRO / "kernels").glob("*.cc"))
# The contract's float determinism needs -ffp-contract=off (no fused multiply-add).
KERNEL_FLAGS = ["-std=c++17", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti", f"-I{MICRO}"]


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package; its tools import each other)."""
    tools = str(REPO / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def gxx_or_skip() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    return gxx


def build_library(sources, out: Path, signatures: dict) -> ctypes.CDLL:
    """Builds `sources` into the shared library `out` and declares `signatures`
    ({name: (argtypes, restype)}) on it."""
    cmd = [gxx_or_skip(), *KERNEL_FLAGS, "-O2", "-fPIC", "-shared", *map(str, sources), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    library = ctypes.CDLL(str(out))
    for name, (argtypes, restype) in signatures.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = restype
    return library


def ptr(array):
    """The address of a C-contiguous numpy array (None stays a null pointer)."""
    if array is None:
        return None
    assert array.flags.c_contiguous
    return array.ctypes.data
