"""Cortex-M cross builds of the firmware code (tools/cortex_m_build.py): every
target compiles, the training kernels fit the Cortex-M4 flash budget, and no
object uses double-precision arithmetic."""
from __future__ import annotations

import subprocess
import sys

import pytest

from micro_build import REPO, load_tool

cortex_m_build = load_tool("cortex_m_build")

pytestmark = pytest.mark.skipif(cortex_m_build.toolchain_missing() is not None,
                                reason="arm-none-eabi-g++ not installed")


@pytest.fixture(scope="module", params=sorted(cortex_m_build.TARGETS))
def build(request, tmp_path_factory):
    target = request.param
    objects = cortex_m_build.compile_objects(target, tmp_path_factory.mktemp(target))
    return target, objects


def test_every_source_is_built(build):
    _target, objects = build
    expected = {p.relative_to(cortex_m_build.MICRO).as_posix() for p in cortex_m_build.sources()}
    assert set(objects) == expected
    assert any(s.startswith("adapter/") for s in expected) and any(s.startswith("kernels/") for s in expected)


def test_training_kernels_fit_the_flash_budget(build):
    target, objects = build
    sizes = cortex_m_build.object_sizes(objects)
    total = sum(s.flash for s in sizes)
    assert all(s.text > 0 for s in sizes if s.source != "kernels/all_ops.cc")
    if target == cortex_m_build.BUDGET_TARGET:
        assert total <= cortex_m_build.FLASH_BUDGET, cortex_m_build.format_table(target, sizes)


def test_no_double_precision_helpers(build):
    _target, objects = build
    assert cortex_m_build.double_helpers(objects) == {}


def test_double_precision_is_detected(tmp_path):
    """The check above can fail: a double on a single-precision FPU calls __aeabi_* helpers."""
    source = tmp_path / "uses_double.cc"
    source.write_text("float Widen(float x, double y) { return static_cast<float>(x * y); }\n")
    obj = tmp_path / "uses_double.o"
    subprocess.run([cortex_m_build.CXX, *cortex_m_build.TARGETS["cortex-m4"], *cortex_m_build.CXX_FLAGS,
                    "-c", str(source), "-o", str(obj)], check=True)
    found = cortex_m_build.double_helpers({"uses_double.cc": obj})
    assert found == {"uses_double.cc": ["__aeabi_d2f", "__aeabi_dmul", "__aeabi_f2d"]}


def test_command_line_prints_the_table():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "cortex_m_build.py"), "--target", "cortex-m4"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kernels/conv_grad_update.cc" in result.stdout
    assert "KiB flash" in result.stdout
