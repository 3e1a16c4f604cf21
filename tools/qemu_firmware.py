"""Builds the micro/core test firmware and runs it on emulated Cortex-M boards.

    python tools/qemu_firmware.py [--target cortex-m4 ...] [--build-dir DIR]

For each target: generates the training case (tools/gen_firmware_case.py) into
the build directory, links micro/core with micro/tests/firmware (own startup,
linker script confining all RAM use to 256 KB, semihosting I/O), runs it under
qemu-system-arm with -icount shift=0 and prints, per training op, whether it
matched the numpy reference bit for bit and how many instructions it executed
(QEMU counts instructions, not cycles: see micro/tests/firmware/instruction_clock.h).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import cortex_m_build  # noqa: E402

FIRMWARE = cortex_m_build.MICRO / "tests" / "firmware"
QEMU = "qemu-system-arm"
# target: (QEMU machine, CPU); both boards put code at 0x0 and RAM at 0x20000000.
MACHINES = {
    "cortex-m4": ("mps2-an386", "cortex-m4"),
    "cortex-m7": ("mps2-an500", "cortex-m7"),
}
LINK_FLAGS = ("-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections")
TIMEOUT_SECONDS = 120

_OP_LINE = re.compile(r"^(PASS|FAIL) (.+) instructions=(\d+)$")
_HEADER_LINE = re.compile(r"^instructions_per_tick=(\d+) ram_bytes=(\d+)$")


@dataclasses.dataclass
class OpResult:
    name: str
    passed: bool
    instructions: int


@dataclasses.dataclass
class Run:
    target: str
    exit_status: int
    output: str
    ops: list
    instructions_per_tick: int = 0
    ram_bytes: int = 0

    @property
    def passed(self) -> bool:
        return self.exit_status == 0 and "RESULT PASS" in self.output and bool(self.ops) \
            and all(op.passed for op in self.ops)


def tools_missing() -> str | None:
    """The first missing tool (cross compiler or emulator), or None."""
    missing = cortex_m_build.toolchain_missing()
    if missing:
        return missing
    return None if shutil.which(QEMU) else QEMU


def build(target: str, build_dir: Path, seed: int = 0) -> Path:
    """The firmware ELF for `target`, with a freshly generated case."""
    build_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(TOOLS / "gen_firmware_case.py"), str(build_dir / "training_case.h"),
                    "--seed", str(seed)], check=True)
    return link(target, build_dir)


def link(target: str, build_dir: Path) -> Path:
    """Compiles and links the firmware against the case already in `build_dir`."""
    elf = build_dir / f"firmware-{target}.elf"
    sources = sorted(FIRMWARE.glob("*.cc")) + sorted((cortex_m_build.MICRO / "core").glob("*.cc"))
    cmd = [cortex_m_build.CXX, *cortex_m_build.TARGETS[target], *cortex_m_build.CXX_FLAGS,
           f"-I{cortex_m_build.MICRO}", f"-I{FIRMWARE}", f"-I{build_dir}", *map(str, sources),
           *LINK_FLAGS, f"-T{FIRMWARE / 'firmware.ld'}", f"-Wl,-Map={elf.with_suffix('.map')}", "-lm", "-o", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{target}: linking the firmware failed:\n{result.stderr}")
    return elf


def run(target: str, elf: Path) -> Run:
    machine, cpu = MACHINES[target]
    cmd = [QEMU, "-M", machine, "-cpu", cpu, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    output = result.stdout + result.stderr
    outcome = Run(target, result.returncode, output, [])
    for line in output.splitlines():
        if m := _OP_LINE.match(line.strip()):
            outcome.ops.append(OpResult(m[2], m[1] == "PASS", int(m[3])))
        elif m := _HEADER_LINE.match(line.strip()):
            outcome.instructions_per_tick, outcome.ram_bytes = int(m[1]), int(m[2])
    return outcome


def format_table(runs: list) -> str:
    names = [op.name for op in runs[0].ops]
    lines = [f"{'op (instructions, qemu -icount)':38}" + "".join(f"{r.target:>14}" for r in runs)]
    for i, name in enumerate(names):
        cells = []
        for r in runs:
            op = r.ops[i] if i < len(r.ops) else None
            cells.append(f"{(op.instructions if op else 0):>9} {'ok' if op and op.passed else 'FAIL':>4}")
        lines.append(f"{name:38}" + "".join(cells))
    lines.append(f"{'total':38}" + "".join(f"{sum(op.instructions for op in r.ops):>9}     " for r in runs))
    lines.append(f"{'RAM reserved (bytes, incl. 32K stack)':38}" + "".join(f"{r.ram_bytes:>9}     " for r in runs))
    lines.append(f"{'instructions per SysTick tick':38}" + "".join(f"{r.instructions_per_tick:>9}     " for r in runs))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(MACHINES))
    parser.add_argument("--build-dir", type=Path, help="default: a temporary directory")
    args = parser.parse_args(argv)
    missing = tools_missing()
    if missing:
        print(f"{missing} not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        build_dir = args.build_dir or Path(scratch)
        runs = [run(t, build(t, build_dir / t)) for t in args.target or list(MACHINES)]
    print(format_table(runs))
    for r in runs:
        if not r.passed:
            print(f"FAIL on {r.target} (exit status {r.exit_status}):\n{r.output}")
    return 0 if all(r.passed for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
