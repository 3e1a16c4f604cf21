"""tools/make_arduino_library.py: the generated Arduino library has the Arduino
layout and its sources compile with only src/ on the include path (TFLM's
headers stood in for by micro/host_abi)."""
from __future__ import annotations

import subprocess

from micro_build import MICRO, gxx_or_skip, load_tool

make_arduino_library = load_tool("make_arduino_library")


def test_library_layout(tmp_path):
    root = make_arduino_library.make_library(tmp_path)
    properties = dict(line.split("=", 1) for line in (root / "library.properties").read_text().splitlines())
    assert properties["name"] == "tflm_train" and properties["includes"] == "tflm_train.h"
    example = {p.name for p in (root / "examples" / "vww_train").iterdir()}
    assert example == {"vww_train.ino", "serial_training.h", "serial_training.cpp"}
    assert "depends=" not in (root / "library.properties").read_text()  # TFLM's library is not in the registry
    copied = {p.relative_to(root / "src").as_posix() for p in (root / "src").rglob("*.cc")}
    expected = {p.relative_to(MICRO).as_posix() for d in ("core", "kernels", "adapter") for p in (MICRO / d).glob("*.cc")}
    assert copied == expected
    assert not (root / "src" / "host").exists() and not (root / "src" / "host_abi").exists()


def test_library_sources_compile_from_src(tmp_path):
    gxx = gxx_or_skip()
    src = make_arduino_library.make_library(tmp_path) / "src"
    for source in sorted(src.rglob("*.cc")):
        result = subprocess.run([gxx, "-std=c++17", "-fsyntax-only", "-fno-exceptions", "-fno-rtti",
                                 "-DTF_LITE_STATIC_MEMORY=1", f"-I{src}", f"-I{MICRO / 'host_abi'}", str(source)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{source.relative_to(src)}:\n{result.stderr}"
