"""Every micro/core and micro/kernels file compiles warning-free with the kernel
flags (C++17, no exceptions, no RTTI, no FMA contraction) and keeps to the
kernel rules visible in its object file: no heap, no mutable static state and,
cross-compiled for a Cortex-M4F when the Arm toolchain is installed, no
double-precision soft-float helpers.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from micro_build import CORE_SOURCES, KERNEL_FLAGS, KERNEL_SOURCES, MICRO, gxx_or_skip

SOURCES = CORE_SOURCES + KERNEL_SOURCES
WARNINGS = ["-Wall", "-Wextra", "-Werror"]
CORTEX_M4F = ["-Os", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
# The op registration table is a function-local static initialised on the first call.
REGISTRATION_TABLE = MICRO / "kernels" / "all_ops.cc"

HEAP_SYMBOLS = re.compile(r"^(malloc|calloc|realloc|free|_Zn[wa]\w*|_Zd[la]\w*|__cxa_throw|__cxa_allocate_exception)$")
# __aeabi_dadd, __aeabi_dcmplt, __aeabi_d2f, __aeabi_f2d, __aeabi_i2d, ... and libm's double functions.
DOUBLE_SYMBOLS = re.compile(r"^(__aeabi_d\w*|__aeabi_\w*2d|floor|ceil|ldexp|log|exp|pow|sqrt|fabs|round)$")


def source_id(path) -> str:
    return str(path.relative_to(MICRO))


def compile_object(compiler: str, source, out, extra=()) -> None:
    cmd = [compiler, *KERNEL_FLAGS, *WARNINGS, *extra, "-c", str(source), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"


def undefined(nm: str, obj) -> set[str]:
    result = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in result.stdout.splitlines() if line.strip()}


def writable_objects(nm: str, obj) -> list[str]:
    """Symbols in .data / .bss (read-only-after-relocation .data.rel.ro is fine)."""
    result = subprocess.run([nm, "-f", "sysv", str(obj)], capture_output=True, text=True, check=True)
    rows = [[field.strip() for field in line.split("|")] for line in result.stdout.splitlines() if "|" in line]
    return [row[0] for row in rows if len(row) == 7 and re.fullmatch(r"\.(data|bss)(\..*)?", row[6])
            and not row[6].startswith(".data.rel.ro")]


@pytest.mark.parametrize("source", SOURCES, ids=source_id)
def test_compiles_cleanly_on_host(source, tmp_path):
    gxx = gxx_or_skip()
    obj = tmp_path / "out.o"
    compile_object(gxx, source, obj, ["-O2"])
    nm = "nm"  # binutils, installed with g++
    assert not {s for s in undefined(nm, obj) if HEAP_SYMBOLS.match(s)}
    if source != REGISTRATION_TABLE:
        assert not writable_objects(nm, obj), "mutable static state"


@pytest.mark.parametrize("source", SOURCES, ids=source_id)
def test_cortex_m4f_build_uses_no_doubles(source, tmp_path):
    gxx, nm = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-nm")
    if gxx is None or nm is None:
        pytest.skip("arm-none-eabi-g++ not found (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    obj = tmp_path / "out.o"
    compile_object(gxx, source, obj, CORTEX_M4F)
    assert not {s for s in undefined(nm, obj) if DOUBLE_SYMBOLS.match(s)}
