"""Builds the host library of tflm-train's kernels for the pinned TFLM wheel.

`library_path()` compiles micro/ (kernels + TFLM adapter + the Python-wheel
registerer) into `libtflm_train_kernels.so`, once per distinct set of sources,
flags, compiler and wheel binary, cached under $TFLM_TRAIN_CACHE (default
~/.cache/tflm_train). The TFLM headers are never needed: the adapter compiles
against micro/host_abi, a description of exactly the pinned wheel's ABI, and
links against the wheel's own `_runtime.so` so that every TFLM symbol it uses
is checked at build time (-Wl,--no-undefined).

Nothing here imports the TFLM runtime: the library is loaded only in the
tflm_runner worker process.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tflm_train.errors import UserError

# micro/host_abi describes this exact wheel; any other build must be re-derived.
PINNED_TFLM_WHEEL = "0.dev20261002031052"
# The extern "C" function the wheel calls to add our ops (micro/host/python_registerer.cc).
REGISTERER = "TflmTrainRegisterOps"
LIBRARY_NAME = "libtflm_train_kernels.so"

MICRO_DIR = Path(__file__).resolve().parent.parent / "micro"
# Directories of micro/ whose .cc files go into the host library.
SOURCE_DIRS = ("core", "kernels", "adapter", "host")

COMPILER = "g++"
# TF_LITE_STATIC_MEMORY and USE_TFLM_COMPRESSION are how the wheel was built;
# the first fixes the TfLiteNode layout. -fvisibility=hidden keeps every
# symbol but the registerer out of the process-wide namespace that
# RTLD_GLOBAL opens, so nothing of ours can interpose on the wheel's code.
COMPILE_FLAGS = (
    "-std=c++17", "-O2", "-fPIC", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti",
    "-fvisibility=hidden", "-fvisibility-inlines-hidden",
    "-DTF_LITE_STATIC_MEMORY=1", "-DUSE_TFLM_COMPRESSION=1", "-DTFLM_TRAIN_ABI_CANARY",
)
LINK_FLAGS = ("-shared", "-Wl,--no-undefined")


def wheel_runtime() -> Path:
    """The pinned wheel's `_runtime.so`; a UserError for any other installed version."""
    try:
        dist = importlib.metadata.distribution("tflite-micro")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"tflite-micro is not installed: pip install tflite-micro=={PINNED_TFLM_WHEEL}") from None
    if dist.version != PINNED_TFLM_WHEEL:
        raise UserError(f"tflite-micro {dist.version} is installed but micro/host_abi describes "
                        f"{PINNED_TFLM_WHEEL}: pip install tflite-micro=={PINNED_TFLM_WHEEL} "
                        "(or re-derive micro/host_abi, see micro/host_abi/README.md)")
    path = Path(dist.locate_file("tflite_micro/python/tflite_micro/_runtime.so"))
    if not path.is_file():
        raise UserError(f"the tflite-micro wheel has no {path.name} at {path}: reinstall it")
    return path


def library_path(micro_dir: Path = MICRO_DIR) -> str:
    """Path of the built library, building it first if these sources were never built."""
    compiler = _compiler()
    runtime = wheel_runtime()
    key = cache_key(micro_dir, compiler, runtime)
    target = cache_dir() / key / LIBRARY_NAME
    if not target.is_file():
        _build(micro_dir, compiler, runtime, target)
    return str(target)


def cache_dir() -> Path:
    return Path(os.environ.get("TFLM_TRAIN_CACHE") or Path.home() / ".cache" / "tflm_train")


def cache_key(micro_dir: Path, compiler: str, runtime: Path) -> str:
    """Hash of everything the library depends on: every C++ file under micro/
    (headers included, by relative path and content), the flags, the compiler
    version and the wheel binary it links against."""
    h = hashlib.sha256()
    for path in sorted(p for p in micro_dir.rglob("*") if p.suffix in (".cc", ".h") and p.is_file()):
        h.update(path.relative_to(micro_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update("\0".join(COMPILE_FLAGS + LINK_FLAGS).encode())
    h.update(subprocess.run([compiler, "-dumpfullversion"], capture_output=True, text=True).stdout.encode())
    h.update(hashlib.sha256(runtime.read_bytes()).digest())
    return h.hexdigest()[:24]


def sources(micro_dir: Path) -> list:
    return sorted(p for d in SOURCE_DIRS for p in (micro_dir / d).glob("*.cc"))


def _compiler() -> str:
    found = shutil.which(COMPILER)
    if found is None:
        raise UserError(f"{COMPILER} not found: install build-essential")
    return found


def _build(micro_dir: Path, compiler: str, runtime: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Relative paths keep compiler messages short; includes resolve from micro/.
    root = micro_dir.parent
    includes = (f"-I{micro_dir.name}", f"-I{micro_dir.name}/host_abi")
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        def compile_one(source: Path) -> str:
            obj = os.path.join(work, source.relative_to(micro_dir).as_posix().replace("/", "__") + ".o")
            _run([compiler, *COMPILE_FLAGS, *includes, "-c", str(source.relative_to(root)), "-o", obj], root)
            return obj

        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            objects = list(pool.map(compile_one, sources(micro_dir)))
        partial = os.path.join(work, LIBRARY_NAME)
        _run([compiler, *LINK_FLAGS, "-o", partial, *objects, str(runtime)], root)
        os.replace(partial, target)  # atomic: concurrent builders never see half a library


def _run(command: list, cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"building the tflm-train kernels failed: {_first_error(result.stderr)}")


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line or "undefined reference" in line:
            return line
    return lines[0] if lines else "compiler exited with an error and no message"
