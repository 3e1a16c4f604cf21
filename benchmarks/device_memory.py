"""Arena of a training step of the paper models on an emulated 32-bit Cortex-M, next to the host's.

    python benchmarks/device_memory.py --tflm-src DIR [--include DIR ...] [--shared ../shared]
        [--models mcunet-5fps,mbv2-w0.35] [--target cortex-m7] [--steps 3] [--cache-dir DIR]

For MCUNet-5FPS and MobileNetV2-w0.35 (128x128, 10-class head, as benchmarks/memory.py)
and each published sparse scheme (examples/paper_schemes), converts with reordering
(default options) and measures the arena on the host (`tflm_train.measure`, pinned
x86-64 wheel), then runs the model through tools/qemu_tflm_firmware.py: TFLM's
MicroInterpreter and reference kernels cross-compiled for the target with our kernels,
on QEMU (mps2-an500 for the Cortex-M7, the paper's STM32F746 core) with the board's
4 MB of RAM, so the link does not cap the arena; --steps training steps, an inference,
and the learned state, compared with the host bit for bit. The device figure is TFLM's
own `arena_used_bytes()` after a training step. Prints a markdown table.

Needs a tflite-micro checkout at 90b983c2b and its third-party headers (see
tools/qemu_tflm_firmware.py), the arm-none-eabi toolchain and qemu-system-arm, so CI
does not run it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

import memory as host_memory  # noqa: E402  (benchmarks/memory.py: models, schemes, paper figures)
import qemu_tflm_firmware as firmware  # noqa: E402

from tflm_train import ir, measure  # noqa: E402
from tflm_train.converter import pipeline  # noqa: E402
from tflm_train.importer.mcunet import import_mcunet  # noqa: E402

# The device needs less than the host (32-bit bookkeeping); the slack only guards the assumption.
ARENA_SLACK_BYTES = 16 * 1024


@dataclasses.dataclass
class Row:
    model: str
    scheme: str
    host_arena_bytes: int
    device_arena_bytes: int = 0   # arena_used_bytes() on the device; 0 if it did not run
    other_ram_bytes: int = 0      # the firmware's RAM besides the arena (32 KB stack, .data, .bss)
    stack_used_bytes: int = 0     # of that stack, the deepest it grew
    train_instructions: int = 0   # first training step, QEMU -icount
    problems: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0          # convert + host measure + build + emulated run + host replay

    @property
    def device_ram_bytes(self) -> int:
        return self.device_arena_bytes + self.other_ram_bytes

    @property
    def fits(self) -> bool:
        return 0 < self.device_arena_bytes and self.device_ram_bytes <= host_memory.BUDGET_BYTES


def table(rows: list, target: str, steps: int) -> str:
    core = target.replace("cortex-m", "Cortex-M")
    lines = [f"| model | scheme | arena, {core} (B) | arena, {core} (KB) | arena, host x86-64 (B) | "
             f"{core} − host (B) | paper, sparse + reorder (KB) | fits 256 KB (arena + firmware RAM, KB) | "
             f"stack used (B) | {steps} steps vs host | train step (M instructions) | s |",
             "|---|---|---:|---:|---:|---:|---:|:---:|---:|:---:|---:|---:|"]
    for r in rows:
        ran = r.device_arena_bytes > 0
        lines.append(
            f"| {r.model} | {r.scheme} | {f'{r.device_arena_bytes:,}' if ran else '—'} | "
            f"{host_memory.kb(r.device_arena_bytes) if ran else '—'} | {r.host_arena_bytes:,} | "
            f"{f'{r.device_arena_bytes - r.host_arena_bytes:+,}' if ran else '—'} | "
            f"{host_memory.PAPER_KB[r.model][2]:,} | "
            f"{('yes' if r.fits else 'no') + f' ({host_memory.kb(r.device_ram_bytes)})' if ran else '—'} | "
            f"{f'{r.stack_used_bytes:,}' if ran else '—'} | {'FAIL' if r.problems else 'PASS'} | {r.train_instructions / 1e6:,.0f} | {r.seconds:.0f} |")
    return "\n".join(lines) + "\n\n" + host_memory.PAPER_NOTE + "\n"


def measure_one(model: str, scheme: str, model_bytes: bytes, source: dict, args, build_dir: Path) -> Row:
    start = time.perf_counter()
    graph = ir.load(model_bytes)
    pipeline.convert(graph, source, pipeline.ConvertOptions(reorder=True))
    training = ir.emit(graph)
    row = Row(model, scheme, measure.measure(training)["peak_sram_bytes"])
    outcome = firmware.check(training, args.target, args.tflm_src, args.include, build_dir, steps=args.steps,
                             arena_bytes=row.host_arena_bytes + ARENA_SLACK_BYTES, cache_dir=args.cache_dir,
                             ram_bytes=firmware.BOARD_RAM_BYTES)
    row.problems = outcome.problems
    if outcome.replies:
        row.device_arena_bytes = outcome.arena_used_bytes
        row.other_ram_bytes = outcome.other_ram_bytes
        row.stack_used_bytes = outcome.stack_used_bytes
        row.train_instructions = next(r.instructions for c, r in zip(outcome.commands, outcome.replies)
                                      if c.kind == "train")
    row.seconds = time.perf_counter() - start
    return row


def setup_error(args) -> str | None:
    """Why the run cannot start (missing tools, sources or models), or None."""
    missing = firmware.qemu_firmware.tools_missing() or (None if shutil.which(firmware.AR) else firmware.AR)
    if missing:
        return f"{missing} not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
    try:
        firmware.check_tflm_src(args.tflm_src)
        firmware.third_party_includes(args.tflm_src, args.include)
    except SystemExit as missing_sources:
        return str(missing_sources)
    for model in args.models:
        if model not in host_memory.MODELS:
            return f"unknown model {model} (choose from {', '.join(host_memory.MODELS)})"
        if not model_path(args.shared, model).is_file():
            return f"{model_path(args.shared, model)} not found (--shared)"
    return None


def model_path(shared: Path, model: str) -> Path:
    return shared / "models" / "tiny-training" / f"{model}.pkl"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflm-src", type=Path, required=True, help="tflite-micro checkout (commit 90b983c2b)")
    parser.add_argument("--include", type=Path, action="append", default=[],
                        help="flatbuffers/include, gemmlowp and ruy header directories")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--models", type=lambda s: [m for m in s.split(",") if m],
                        default=list(host_memory.MODELS))
    parser.add_argument("--target", choices=sorted(firmware.qemu_firmware.MACHINES), default="cortex-m7")
    parser.add_argument("--steps", type=int, default=3, help="training steps compared with the host")
    parser.add_argument("--cache-dir", type=Path, default=firmware.DEFAULT_CACHE, help="compiled TFLM libraries")
    args = parser.parse_args(argv)
    error = setup_error(args)
    if error:
        print(f"device_memory.py: error: {error}", file=sys.stderr)
        return 2
    rows = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for model in args.models:
                model_bytes = ir.emit(import_mcunet(str(model_path(args.shared, model)),
                                                    num_classes=host_memory.NUM_CLASSES))
                for scheme, source in host_memory.published_schemes(model):
                    rows.append(measure_one(model, scheme, model_bytes, source, args, Path(scratch) / scheme))
                    r = rows[-1]
                    print(f"  {model} {scheme}: device {r.device_arena_bytes:,} B, host {r.host_arena_bytes:,} B, "
                          f"{'FAIL ' + '; '.join(r.problems) if r.problems else 'PASS'} ({r.seconds:.0f} s)",
                          file=sys.stderr)
    except RuntimeError as error:   # a compiler failure: its message carries the compiler's output
        print(f"device_memory.py: error: {error}", file=sys.stderr)
        return 1
    print(table(rows, args.target, args.steps))
    return 0 if all(not r.problems for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
