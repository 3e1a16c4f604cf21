"""Runs the VWW example's device side through the stock TFLM interpreter on an emulated Cortex-M.

    python tools/qemu_tflm_firmware.py --tflm-src DIR --model TRAIN.tflite [--include DIR ...]
        [--target cortex-m4] [--steps 3] [--seed 0] [--arena-bytes N] [--ram-bytes N] [--build-dir DIR]
        [--cache-dir DIR]

Cross-compiles TFLM's MicroInterpreter and reference kernels from a tflite-micro
checkout (never part of this repo; pinned commit 90b983c2b), links them with
micro/ (our kernels and adapter), examples/vww/common (the serial protocol of
the Arduino sketch and the Mbed program) and micro/tests/firmware/tflm, and
runs the converted model under qemu-system-arm with semihosting: it sets the
learning rate, runs a few training steps on random images, an inference, then
prints the learned state. The
same commands run on the host in the pinned TFLM wheel with our kernels
(tflm_runner.TflmSession); the losses and scores must agree to the printed six
decimals and every variable tensor byte for byte. Prints each command's QEMU
instruction count (-icount; not cycles) and the device's arena use.

TFLM needs flatbuffers (v25.9.23), gemmlowp's fixedpoint and ruy's profiler
headers: --include DIR for each, by default TFLM's own Makefile download
directory (tensorflow/lite/micro/tools/make/downloads). The TFLM library is
compiled once per source directory and flags into --cache-dir.

The firmware registers the builtins the model's operator codes name (generated
model_ops.h) and the training ops. Its RAM (.data, .bss with the arena, 32 KB
stack) must fit in --ram-bytes, by default the 256 KB of the linker script; up to
the boards' 4 MB (BOARD_RAM_BYTES) to measure arenas beyond it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS.parent))

import cortex_m_build  # noqa: E402
import qemu_firmware  # noqa: E402

from tflm_train import data, ir  # noqa: E402

REPO = cortex_m_build.REPO
FIRMWARE = qemu_firmware.FIRMWARE
EXAMPLE_COMMON = REPO / "examples" / "vww" / "common"
AR = "arm-none-eabi-ar"
DEFAULT_ARENA_BYTES = 203 * 1024   # the sketch's and main.cpp's arena
LINKER_RAM_BYTES = 256 * 1024      # micro/tests/firmware/firmware.ld's RAM region
BOARD_RAM_BYTES = 4 * 1024 * 1024  # the mps2 boards' ZBT SSRAM2/3 at 0x20000000
DEFAULT_CACHE = Path.home() / ".cache" / "tflm_train" / "firmware"
TIMEOUT_SECONDS = 600
# TFLM's warnings are not ours to fix; TF_LITE_STATIC_MEMORY is its firmware configuration.
TFLM_FLAGS = ("-std=c++17", "-Os", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics",
              "-ffunction-sections", "-fdata-sections", "-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_MCU_DEBUG_LOG",
              "-DFLATBUFFERS_LOCALE_INDEPENDENT=0", "-w")
# TFLM's library sources as its Makefile collects them (tools/make/sources.inc);
# debug_log.cc is the platform hook micro/tests/firmware/tflm replaces.
TFLM_SOURCE_DIRS = ("tensorflow/lite/micro", "tensorflow/lite/micro/arena_allocator",
                    "tensorflow/lite/micro/memory_planner", "tensorflow/lite/micro/tflite_bridge",
                    "tensorflow/lite/micro/kernels")
TFLM_EXCLUDED = {"tensorflow/lite/micro/debug_log.cc", "tensorflow/lite/array.cc"}
DOWNLOADS = "tensorflow/lite/micro/tools/make/downloads"
DEFAULT_INCLUDES = ("flatbuffers/include", "gemmlowp", "ruy")
HEADER_CHECKS = {"flatbuffers/flatbuffers.h": "flatbuffers", "fixedpoint/fixedpoint.h": "gemmlowp",
                 "ruy/profiler/instrumentation.h": "ruy"}
RESOLVER_HEADER = "tensorflow/lite/micro/micro_mutable_op_resolver.h"

_INSTRUCTIONS = re.compile(r"^instructions (\d+)$")
_STACK_USED = re.compile(r"^stack_used_bytes (\d+)$", re.M)


def tflm_sources(tflm_src: Path) -> list:
    found = [p for d in TFLM_SOURCE_DIRS for p in sorted((tflm_src / d).glob("*.cc"))]
    # tensorflow/ outside lite/micro and lite/experimental (shared TFLite code TFLM compiles).
    for path in sorted((tflm_src / "tensorflow").rglob("*.c*")):
        rel = path.relative_to(tflm_src).as_posix()
        if path.suffix in (".c", ".cc") and not rel.startswith(("tensorflow/lite/micro/",
                                                                "tensorflow/lite/experimental/")):
            found.append(path)
    return [p for p in found if not p.name.endswith("_test.cc")
            and p.relative_to(tflm_src).as_posix() not in TFLM_EXCLUDED]


def check_tflm_src(tflm_src: Path) -> None:
    if not (tflm_src / RESOLVER_HEADER).is_file():
        raise SystemExit(f"{tflm_src} is not a tflite-micro checkout ({RESOLVER_HEADER} not found): "
                         "pass --tflm-src DIR")


def third_party_includes(tflm_src: Path, includes: list) -> list:
    dirs = list(includes) or [tflm_src / DOWNLOADS / d for d in DEFAULT_INCLUDES]
    for header, name in HEADER_CHECKS.items():
        if not any((d / header).is_file() for d in dirs):
            raise SystemExit(f"{name} headers ({header}) not found in {', '.join(map(str, dirs))}: "
                             "pass --include DIR for flatbuffers/include, gemmlowp and ruy")
    return dirs


def _compile(cmd: list, what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {what} failed:\n{result.stderr[-4000:]}")


def build_tflm(target: str, tflm_src: Path, includes: list, cache: Path) -> Path:
    """libtflm.a for `target`, compiled once per source tree and flags."""
    flags = [*cortex_m_build.TARGETS[target], *TFLM_FLAGS, f"-I{tflm_src}", *(f"-I{d}" for d in includes)]
    key = hashlib.sha256("\0".join([str(tflm_src.resolve()), *flags]).encode()).hexdigest()[:16]
    out = cache / f"tflm-{target}-{key}"
    library = out / "libtflm.a"
    if library.is_file():
        return library
    out.mkdir(parents=True, exist_ok=True)
    sources = tflm_sources(tflm_src)

    def compile_one(source: Path) -> Path:
        obj = out / (source.relative_to(tflm_src).as_posix().replace("/", "__") + ".o")
        if not obj.is_file():
            _compile([cortex_m_build.CXX, *flags, "-c", str(source), "-o", str(obj)], str(source))
        return obj

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    subprocess.run([AR, "rcs", str(library) + ".part", *map(str, objects)], check=True)
    os.replace(str(library) + ".part", library)
    return library


def model_header(model: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in model[i:i + 16]) for i in range(0, len(model), 16)]
    return ("// generated by tools/qemu_tflm_firmware.py; do not edit\n#pragma once\n\n"
            f"alignas(16) const unsigned char g_model_data[{len(model)}] = {{\n  "
            + ",\n  ".join(rows) + "\n};\n")


def builtin_kinds(graph: ir.Graph) -> list:
    """The model's builtin operators (not the custom training ops), in order of first use."""
    return list(dict.fromkeys(op.kind for op in graph.ops if not op.custom))


def resolver_method(kind: str) -> str:
    """MicroMutableOpResolver's method for a builtin: CONV_2D -> AddConv2D, BATCH_TO_SPACE_ND -> AddBatchToSpaceNd."""
    return "Add" + "".join(part.capitalize() if part[0].isalpha() else part for part in kind.split("_"))


def ops_header(kinds: list) -> str:
    """model_ops.h: a resolver with exactly the model's builtins and the training ops."""
    adds = "".join(f"      resolver.{resolver_method(kind)}(),\n" for kind in kinds)
    return ("// generated by tools/qemu_tflm_firmware.py; do not edit\n#pragma once\n\n"
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n#include "tflm_train.h"\n\n'
            f"constexpr int kModelBuiltinOps = {len(kinds)};\n"
            "using ModelOpResolver =\n"
            "    tflite::MicroMutableOpResolver<kModelBuiltinOps + tflm_train::kTrainingOpCount>;\n\n"
            "inline TfLiteStatus AddModelOps(ModelOpResolver& resolver) {\n"
            "  const TfLiteStatus builtins[] = {\n" + adds + "      kTfLiteOk};\n"
            "  for (TfLiteStatus status : builtins) {\n"
            "    if (status != kTfLiteOk) return status;\n"
            "  }\n"
            "  return tflm_train::AddTrainingOps(resolver);\n"
            "}\n")


def unregistrable_builtins(kinds: list, tflm_src: Path) -> list:
    """The builtins for which TFLM's MicroMutableOpResolver has no Add method (by resolver_method's name)."""
    header = (tflm_src / RESOLVER_HEADER).read_text()
    return [kind for kind in kinds if not re.search(rf"\bTfLiteStatus\s+{resolver_method(kind)}\(", header)]


def link(target: str, build_dir: Path, model: bytes, tflm_src: Path, includes: list, library: Path,
         arena_bytes: int, ram_bytes: int = LINKER_RAM_BYTES) -> Path:
    """The firmware ELF; model_ops.h must be in `build_dir` already."""
    (build_dir / "model_data.h").write_text(model_header(model))
    elf = build_dir / f"tflm-firmware-{target}.elf"
    ours = [FIRMWARE / "startup.cc", FIRMWARE / "semihosting.cc", FIRMWARE / "instruction_clock.cc",
            *sorted((FIRMWARE / "tflm").glob("*.cc")), *sorted(EXAMPLE_COMMON.glob("*.cpp")),
            *cortex_m_build.sources()]
    # -isystem: TFLM's headers warn under -Wall, ours must not.
    cmd = [cortex_m_build.CXX, *cortex_m_build.TARGETS[target], *cortex_m_build.CXX_FLAGS, "-Werror",
           "-DTF_LITE_STATIC_MEMORY", f"-DTFLM_TRAIN_ARENA_BYTES={arena_bytes}",
           f"-I{cortex_m_build.MICRO}", f"-I{FIRMWARE}", f"-I{EXAMPLE_COMMON}", f"-I{build_dir}",
           "-isystem", str(tflm_src), *(a for d in includes for a in ("-isystem", str(d))), *map(str, ours),
           str(library),
           *qemu_firmware.LINK_FLAGS, f"-T{FIRMWARE / 'firmware.ld'}", f"-Wl,-Map={elf.with_suffix('.map')}",
           *([] if ram_bytes == LINKER_RAM_BYTES else [f"-Wl,--defsym=RAM_BYTES={ram_bytes}"]),
           "-lm", "-o", str(elf)]
    _compile(cmd, "the firmware")
    return elf


# ---------------------------------------------------------------- the session

@dataclasses.dataclass
class Command:
    kind: str                 # "rate" | "train" | "infer" | "state"
    label: int = -1
    pixels: np.ndarray | None = None
    learning_rate: float = 0.0

    def encode(self) -> bytes:
        if self.kind == "rate":
            return b"L" + np.float32(self.learning_rate).astype("<f4").tobytes()
        if self.kind == "train":
            return b"T" + bytes([self.label]) + self.pixels.tobytes()
        if self.kind == "infer":
            return b"I" + self.pixels.tobytes()
        return b"S"


@dataclasses.dataclass
class Reply:
    lines: list
    arena_used_bytes: int = 0
    instructions: int = 0


def session_commands(spec: data.InputSpec, steps: int, seed: int, learning_rate: float) -> list:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=spec.shape, dtype=np.uint8) for _ in range(steps)]
    commands = [Command("train", int(rng.integers(spec.num_classes)), image) for image in images]
    return [Command("rate", learning_rate=learning_rate), *commands, Command("infer", pixels=images[0]),
            Command("state")]


def parse_transcript(text: str, count: int) -> tuple:
    """(ready arena bytes, one Reply per command) from the firmware's console output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "ready" not in lines:
        raise ValueError("the firmware did not get ready:\n" + "\n".join(lines[-20:]))
    lines = lines[lines.index("ready") + 1:]
    ready_arena = int(lines.pop(0).split()[1])
    replies, current = [], []
    for line in lines:
        if m := _INSTRUCTIONS.match(line):
            arena = [c for c in current if c.startswith("arena_used_bytes ")]
            body = [c for c in current if not c.startswith("arena_used_bytes ")]
            replies.append(Reply(body, int(arena[-1].split()[1]) if arena else 0, int(m[1])))
            current = []
        else:
            current.append(line)
    if len(replies) != count:
        raise ValueError(f"{len(replies)} replies for {count} commands:\n" + "\n".join(lines[-20:]))
    return ready_arena, replies


def device_pixels(spec: data.InputSpec, pixels: np.ndarray) -> np.ndarray:
    """The image input the device builds from pixels (examples/vww/common/serial_training.h)."""
    if spec.dtype == np.int8:
        return (pixels.astype(np.int16) - 128).astype(np.int8)[None]
    return pixels.astype(np.float32)[None]


def host_replies(model: bytes, spec: data.InputSpec, commands: list) -> list:
    """What the device should answer, from the host's TFLM (pinned wheel) with our kernels."""
    from tflm_train.tflm_runner import TflmSession
    variables = [i for i, t in enumerate(ir.load(model).referenced_tensors()) if t.is_variable]
    expected, learning_rate = [], None
    with TflmSession(model, preserve_all_tensors=True) as session:
        for command in commands:
            if command.kind == "rate":
                learning_rate = np.float32(command.learning_rate)
                expected.append(float(learning_rate))
                continue
            if command.kind == "state":
                expected.append({i: session.tensor(i).tobytes() for i in variables})
                continue
            image = device_pixels(spec, command.pixels)
            outputs = session.invoke([image, np.array([command.label], np.int32),
                                      np.array([learning_rate], np.float32)])
            expected.append(float(outputs[-1][0]) if command.kind == "train" else outputs[0].reshape(-1))
    return expected


def _printed_close(printed: float, value: float) -> bool:
    """`printed` is `value` with six decimals (the device's float format; logf may differ by an ulp)."""
    return abs(printed - value) <= 5e-7 + 1e-6 * abs(value)


def compare(commands: list, replies: list, expected: list) -> list:
    """One problem string per disagreement between the device's replies and the host's."""
    problems = []
    for n, (command, reply, want) in enumerate(zip(commands, replies, expected)):
        where = f"command {n} ({command.kind})"
        errors = [line for line in reply.lines if line.startswith("error")]
        if errors:
            problems.append(f"{where}: {errors[0]}")
            continue
        if command.kind in ("rate", "train"):
            prefix = "learning_rate " if command.kind == "rate" else "loss "
            got = [line for line in reply.lines if line.startswith(prefix)]
            if len(got) != 1 or not _printed_close(float(got[0].split()[1]), want):
                problems.append(f"{where}: device {got}, host {prefix}{want:.6f}")
        elif command.kind == "infer":
            got = [line for line in reply.lines if line.startswith("scores")]
            values = [float(v) for v in got[0].split()[1:]] if len(got) == 1 else []
            if len(values) != len(want) or not all(_printed_close(a, float(b)) for a, b in zip(values, want)):
                problems.append(f"{where}: device {got}, host {[round(float(v), 6) for v in want]}")
        else:
            state = {}
            for line in reply.lines:
                if line.startswith("var "):
                    fields = line.split()
                    state[int(fields[1])] = bytes.fromhex(fields[-1])
            if set(state) != set(want):
                problems.append(f"{where}: device variables {sorted(state)}, host {sorted(want)}")
            for index in sorted(set(state) & set(want)):
                if state[index] != want[index]:
                    differ = sum(a != b for a, b in zip(state[index], want[index]))
                    problems.append(f"{where}: variable tensor {index} differs in {differ} of "
                                    f"{len(want[index])} bytes")
    return problems


@dataclasses.dataclass
class Outcome:
    target: str
    commands: list
    replies: list
    problems: list
    ready_arena_bytes: int
    ram_bytes: int            # RAM the image reserves: .data, .bss (the arena array included), stack
    output: str
    arena_bytes: int = DEFAULT_ARENA_BYTES   # the arena array's size
    stack_used_bytes: int = 0                # the deepest the stack grew (of its 32 KB)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def arena_used_bytes(self) -> int:
        """The most arena_used_bytes() reported: after AllocateTensors or any command."""
        return max([self.ready_arena_bytes, *(r.arena_used_bytes for r in self.replies)])

    @property
    def other_ram_bytes(self) -> int:
        """RAM the firmware needs besides the arena array (stack, .data, the rest of .bss)."""
        return self.ram_bytes - self.arena_bytes


def run(target: str, elf: Path, build_dir: Path, commands: list) -> tuple:
    (build_dir / "commands.bin").write_bytes(b"".join(c.encode() for c in commands))
    machine, cpu = qemu_firmware.MACHINES[target]
    cmd = [qemu_firmware.QEMU, "-M", machine, "-cpu", cpu, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=build_dir)
    return result.returncode, result.stdout + result.stderr


def image_ram_bytes(elf: Path) -> int:
    symbols = subprocess.run([cortex_m_build.NM, str(elf)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^([0-9a-f]+) \w __ram_used$", symbols, re.M)
    return int(m[1], 16) if m else 0


def check(model: bytes, target: str, tflm_src: Path, includes: list, build_dir: Path, steps: int = 3,
          seed: int = 0, arena_bytes: int = DEFAULT_ARENA_BYTES, learning_rate: float = 0.05,
          cache_dir: Path = DEFAULT_CACHE, ram_bytes: int = LINKER_RAM_BYTES) -> Outcome:
    """Builds, runs and compares."""
    graph = ir.load(model)
    spec = data.InputSpec.of_model(graph)
    if spec.dtype != np.int8 and (spec.pixel_offset, spec.pixel_step) != (0.0, 1.0):
        raise SystemExit("the model's float input does not take raw 0..255 pixels, as the device feeds it")
    if not LINKER_RAM_BYTES <= ram_bytes <= BOARD_RAM_BYTES:
        raise SystemExit(f"RAM of {ram_bytes} bytes: choose {LINKER_RAM_BYTES} to {BOARD_RAM_BYTES} (the boards')")
    check_tflm_src(tflm_src)
    kinds = builtin_kinds(graph)
    unknown = unregistrable_builtins(kinds, tflm_src)
    if unknown:
        raise SystemExit(f"TFLM's MicroMutableOpResolver has no {', '.join(map(resolver_method, unknown))} "
                         f"for the model's builtin(s) {', '.join(unknown)}")
    build_dir.mkdir(parents=True, exist_ok=True)
    includes = third_party_includes(tflm_src, includes)
    library = build_tflm(target, tflm_src, includes, cache_dir)
    (build_dir / "model_ops.h").write_text(ops_header(kinds))
    elf = link(target, build_dir, model, tflm_src, includes, library, arena_bytes, ram_bytes)
    commands = session_commands(spec, steps, seed, learning_rate)
    status, output = run(target, elf, build_dir, commands)
    try:
        ready_arena, replies = parse_transcript(output, len(commands))
    except ValueError as exc:
        return Outcome(target, commands, [], [f"exit status {status}: {exc}"], 0, image_ram_bytes(elf), output,
                       arena_bytes)
    problems = compare(commands, replies, host_replies(model, spec, commands))
    if status != 0:
        problems.append(f"exit status {status}")
    stack = _STACK_USED.search(output)
    return Outcome(target, commands, replies, problems, ready_arena, image_ram_bytes(elf), output, arena_bytes,
                   int(stack[1]) if stack else 0)


def format_outcome(outcome: Outcome) -> str:
    lines = [f"{outcome.target}: {'PASS' if outcome.passed else 'FAIL'}  arena after AllocateTensors "
             f"{outcome.ready_arena_bytes} B, RAM reserved by the image {outcome.ram_bytes} B (incl. 32K stack "
             f"and the {outcome.arena_bytes} B arena), stack used {outcome.stack_used_bytes} B",
             f"  {'command':10} {'instructions':>13} {'arena used':>11}  reply"]
    for command, reply in zip(outcome.commands, outcome.replies):
        text = reply.lines[0] if reply.lines else ""
        if command.kind == "state":
            text = f"{sum(line.startswith('var ') for line in reply.lines)} variable tensors"
        lines.append(f"  {command.kind:10} {reply.instructions:13d} {reply.arena_used_bytes:11d}  {text[:60]}")
    lines += [f"  problem: {p}" for p in outcome.problems]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflm-src", type=Path, required=True, help="tflite-micro checkout (commit 90b983c2b)")
    parser.add_argument("--include", type=Path, action="append", default=[],
                        help="flatbuffers/include, gemmlowp and ruy header directories")
    parser.add_argument("--model", type=Path, required=True, help="a training model (tflm-train convert)")
    parser.add_argument("--target", choices=sorted(qemu_firmware.MACHINES), default="cortex-m4")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arena-bytes", type=int, default=DEFAULT_ARENA_BYTES)
    parser.add_argument("--ram-bytes", type=int, default=LINKER_RAM_BYTES,
                        help=f"RAM the firmware may use (up to the boards' {BOARD_RAM_BYTES})")
    parser.add_argument("--build-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="compiled TFLM libraries")
    args = parser.parse_args(argv)
    missing = qemu_firmware.tools_missing() or (None if shutil.which(AR) else AR)
    if missing:
        print(f"{missing} not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        outcome = check(args.model.read_bytes(), args.target, args.tflm_src, args.include,
                        args.build_dir or Path(scratch), args.steps, args.seed, args.arena_bytes,
                        cache_dir=args.cache_dir, ram_bytes=args.ram_bytes)
    print(format_outcome(outcome))
    if not outcome.passed:
        print(outcome.output[-3000:])
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
