"""Cross-compiles tflm-train's firmware code for Cortex-M and prints its flash/RAM cost.

    python tools/cortex_m_build.py [--target cortex-m4 ...] [--out DIR]

Compiles micro/core, micro/kernels and micro/adapter with arm-none-eabi-g++ at
-Os for each target and prints `.text/.data/.bss` per source file (from
arm-none-eabi-size) and the total. The adapter is compiled against
micro/host_abi, a stand-in for TFLM's headers: its size is indicative, the real
build compiles it against TFLM. Exits non-zero if the Cortex-M4 total exceeds
FLASH_BUDGET or any object calls a double-precision helper (the contract
forbids doubles; single-precision FPUs would emulate them in software).

The per-file figures are object sizes before linking: an upper bound on what
a firmware linked with --gc-sections keeps, and without the libm/libgcc
routines the kernels call (floorf, logf, ldexpf).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "micro"
SOURCE_DIRS = ("core", "kernels", "adapter")

CXX = "arm-none-eabi-g++"
SIZE = "arm-none-eabi-size"
NM = "arm-none-eabi-nm"

# Per-target code-generation flags (hard-float ABI with the core's FPU).
TARGETS = {
    "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
}
# -ffp-contract=off is the contract's float determinism (no fused multiply-add).
CXX_FLAGS = ("-std=c++17", "-Os", "-fno-exceptions", "-fno-rtti", "-ffp-contract=off",
             "-ffunction-sections", "-fdata-sections", "-Wall")
# TFLM firmware builds use static memory; host_abi requires the define too.
DEFINES = ("-DTF_LITE_STATIC_MEMORY=1",)
INCLUDES = (f"-I{MICRO}", f"-I{MICRO / 'host_abi'}")

BUDGET_TARGET = "cortex-m4"
FLASH_BUDGET = 64 * 1024
# Software double-precision arithmetic and float<->double conversions (ARM RTABI names).
DOUBLE_HELPER = re.compile(r"^__aeabi_(d[a-z0-9]+|f2d)$")


@dataclasses.dataclass(frozen=True)
class ObjectSize:
    source: str  # relative to micro/
    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data


def toolchain_missing() -> str | None:
    """The name of the first missing cross tool, or None."""
    for tool in (CXX, SIZE, NM):
        if shutil.which(tool) is None:
            return tool
    return None


def sources() -> list:
    return sorted(p for d in SOURCE_DIRS for p in (MICRO / d).glob("*.cc"))


def compile_objects(target: str, out_dir: Path) -> dict:
    """{source relative to micro/: object path}, compiled in parallel."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def compile_one(source: Path) -> tuple:
        rel = source.relative_to(MICRO).as_posix()
        obj = out_dir / (rel.replace("/", "__") + ".o")
        cmd = [CXX, *TARGETS[target], *CXX_FLAGS, *DEFINES, *INCLUDES, "-c", str(source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{target}: compiling {rel} failed:\n{result.stderr}")
        return rel, obj

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(pool.map(compile_one, sources()))


def object_sizes(objects: dict) -> list:
    """Berkeley-format sizes of every object, in source order."""
    result = subprocess.run([SIZE, *map(str, objects.values())], capture_output=True, text=True, check=True)
    rows = result.stdout.splitlines()[1:]  # header: text data bss dec hex filename
    by_path = {}
    for row in rows:
        text, data, bss, _dec, _hex, path = row.split(maxsplit=5)
        by_path[path] = (int(text), int(data), int(bss))
    return [ObjectSize(rel, *by_path[str(obj)]) for rel, obj in objects.items()]


def double_helpers(objects: dict) -> dict:
    """{source: [double-precision helper symbols it references]} for offending objects."""
    offenders = {}
    for rel, obj in objects.items():
        result = subprocess.run([NM, "-u", str(obj)], capture_output=True, text=True, check=True)
        symbols = [line.split()[-1] for line in result.stdout.splitlines() if line.strip()]
        found = sorted(s for s in symbols if DOUBLE_HELPER.match(s))
        if found:
            offenders[rel] = found
    return offenders


def format_table(target: str, sizes: list) -> str:
    lines = [f"{target}  ({' '.join(TARGETS[target])} -Os)",
             f"  {'source':34} {'.text':>7} {'.data':>6} {'.bss':>6} {'flash':>7}"]
    for s in sizes:
        lines.append(f"  {s.source:34} {s.text:7d} {s.data:6d} {s.bss:6d} {s.flash:7d}")
    total = ObjectSize("total", *(sum(getattr(s, f) for s in sizes) for f in ("text", "data", "bss")))
    lines.append(f"  {'total':34} {total.text:7d} {total.data:6d} {total.bss:6d} {total.flash:7d}"
                 f"  ({total.flash / 1024:.1f} KiB flash)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="target core (repeatable; default: all)")
    parser.add_argument("--out", type=Path, help="object directory (default: a temporary one)")
    args = parser.parse_args(argv)
    missing = toolchain_missing()
    if missing:
        print(f"{missing} not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi", file=sys.stderr)
        return 2
    status = 0
    with tempfile.TemporaryDirectory() as scratch:
        for target in args.target or list(TARGETS):
            objects = compile_objects(target, (args.out or Path(scratch)) / target)
            sizes = object_sizes(objects)
            print(format_table(target, sizes), end="\n\n")
            total = sum(s.flash for s in sizes)
            if target == BUDGET_TARGET and total > FLASH_BUDGET:
                print(f"FAIL: {total} bytes of flash on {target} exceed the {FLASH_BUDGET}-byte budget")
                status = 1
            for source, symbols in double_helpers(objects).items():
                print(f"FAIL: {target} {source} calls double-precision helpers: {', '.join(symbols)}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
