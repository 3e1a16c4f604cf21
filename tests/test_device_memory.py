"""benchmarks/device_memory.py without TFLM sources: its table and its one-line setup errors (the emulated
runs themselves need a tflite-micro checkout; CI does not run them)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from conftest import REPO

spec = importlib.util.spec_from_file_location("device_memory", Path(REPO) / "benchmarks" / "device_memory.py")
device_memory = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = device_memory  # dataclasses look their module up
spec.loader.exec_module(device_memory)


def test_table_reports_device_and_host_arena_and_the_256_kb_budget():
    rows = [device_memory.Row("mcunet-5fps", "mcunet-5fps_49kb", 151_552, 140_000, 40_000, 9_000, 1_500_000_000),
            device_memory.Row("mbv2-w0.35", "mbv2-w0.35_138kb", 234_800, 230_000, 40_000, 9_000, 2_000_000_000),
            device_memory.Row("mbv2-w0.35", "mbv2-w0.35_49kb", 141_926, problems=["command 1 (train): x"])]
    lines = device_memory.table(rows, "cortex-m7", 3).splitlines()
    assert "arena, Cortex-M7 (B)" in lines[0] and "3 steps vs host" in lines[0]
    assert lines[2].split(" | ")[2:10] == ["140,000", "136.7", "151,552", "-11,552", "173", "yes (175.8)", "9,000",
                                          "PASS"]
    assert lines[3].split(" | ")[7:10] == ["no (263.7)", "9,000", "PASS"]            # 270,000 B > 256 KB
    assert lines[4].split(" | ")[2:10] == ["—", "—", "141,926", "—", "141", "—", "—", "FAIL"]
    assert "134 / 160 / 173" in lines[-1]


def test_missing_sources_are_a_one_line_error(tmp_path, capsys):
    status = device_memory.main(["--tflm-src", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("device_memory.py: error: ") and "\n" not in err
