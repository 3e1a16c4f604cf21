"""micro/core on emulated Cortex-M4 (mps2-an386) and Cortex-M7 (mps2-an500):
one training step of the case from tools/gen_firmware_case.py, every op's
results bit-identical to the numpy reference (tools/qemu_firmware.py)."""
from __future__ import annotations

import re
import subprocess

import pytest

from micro_build import load_tool

qemu_firmware = load_tool("qemu_firmware")
_MISSING = qemu_firmware.tools_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"{_MISSING} not installed")

EXPECTED_OPS = {"TFLT_TRAIN_INIT", "TFLT_CONV_2D_SPLIT", "TFLT_SOFTMAX_XENT", "TFLT_CONV_INPUT_GRAD (fc)",
                "TFLT_CONV_GRAD_UPDATE (fc)", "TFLT_MEAN_GRAD", "TFLT_DEPTHWISE_INPUT_GRAD",
                "TFLT_DEPTHWISE_POINTWISE_GRAD", "TFLT_DEPTHWISE_POINTWISE_GRAD (block)",
                "TFLT_CONV_WEIGHT_GRAD (depthwise)", "TFLT_BIAS_GRAD", "TFLT_SGD_UPDATE (weight)",
                "TFLT_SGD_UPDATE (bias)", "TFLT_CONV_INPUT_GRAD (split conv)",
                "TFLT_CONV_GRAD_UPDATE (split conv)", "TFLT_DEPTHWISE_CONV_2D", "TFLT_ACTIVATION_MASK",
                "TFLT_CONV_CHAIN", "TFLT_CONV_CHAIN (in place)"}
RAM_LIMIT = 256 * 1024


@pytest.mark.parametrize("target", sorted(qemu_firmware.MACHINES))
def test_training_step_matches_reference_on_emulated_mcu(target, tmp_path):
    elf = qemu_firmware.build(target, tmp_path)
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    # The whole linked image, libgcc included, is free of double-precision arithmetic.
    assert not re.search(r"__aeabi_(d[a-z]|f2d|l2d|f2lz)", symbols)
    run = qemu_firmware.run(target, elf)
    assert run.passed, run.output
    assert {op.name for op in run.ops} == EXPECTED_OPS
    assert run.instructions_per_tick > 0, "SysTick did not advance under -icount"
    assert all(op.instructions > 0 for op in run.ops), qemu_firmware.format_table([run])
    assert 0 < run.ram_bytes <= RAM_LIMIT


def test_another_seed_also_matches(tmp_path):
    run = qemu_firmware.run("cortex-m4", qemu_firmware.build("cortex-m4", tmp_path, seed=7))
    assert run.passed, run.output


def test_a_wrong_expectation_is_reported(tmp_path):
    """The firmware's comparison can fail: one changed expected bias element fails exactly its op."""
    qemu_firmware.build("cortex-m4", tmp_path)
    header = tmp_path / "training_case.h"
    text = header.read_text()
    match = re.search(r"const float expected_db2\[\d+\] = \{([^,]+),", text)
    header.write_text(text.replace(match.group(0), match.group(0).replace(match.group(1), "0x1.8p+100f"), 1))
    elf = qemu_firmware.link("cortex-m4", tmp_path)  # against the edited case
    run = qemu_firmware.run("cortex-m4", elf)
    assert run.exit_status != 0 and "RESULT FAIL" in run.output
    assert [op.name for op in run.ops if not op.passed] == ["TFLT_BIAS_GRAD"]
