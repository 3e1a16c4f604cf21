"""Runs a model in the stock TFLM interpreter with tflm-train's kernels.

The interpreter always lives in a worker process (tflm_train/_tflm_worker.py):
TFLM segfaults on some bad inputs and cannot share a process with TensorFlow.
A crashed worker becomes a UserError carrying TFLM's last messages.

    with TflmSession(model_bytes) as session:
        outputs = session.invoke([image, label])
"""
from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import weakref

import numpy as np

from tflm_train import ir, native
from tflm_train.errors import UserError

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tflm_worker.py")
# Only the pages TFLM touches are ever committed, so a generous default costs nothing.
DEFAULT_ARENA_BYTES = 32 << 20
_ALLOCATION_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class TflmSession:
    """One interpreter over `model_bytes`, with the kernels from native.library_path().

    preserve_all_tensors: keep every tensor readable after invoke (TFLM's linear
    planner, a larger arena, and the model's own offline plan set aside, which that
    planner cannot take: every tensor apart, the same values); tensor() needs it and
    allocations() forbids it.
    """

    def __init__(self, model_bytes: bytes, arena_size: int | None = None,
                 preserve_all_tensors: bool = False):
        if arena_size is not None and arena_size <= 0:
            raise UserError(f"arena size must be positive, got {arena_size}")
        library = native.library_path()
        self._preserve_all_tensors = preserve_all_tensors
        model_bytes = ir.without_offline_plan(model_bytes) if preserve_all_tensors else bytes(model_bytes)
        self._worker = _Worker()
        try:
            info = _open(self._worker, library, model_bytes, arena_size or DEFAULT_ARENA_BYTES,
                         preserve_all_tensors)
        except BaseException:
            self._worker.close()
            raise
        self.num_inputs, self.num_outputs, self.num_tensors = info["inputs"], info["outputs"], info["tensors"]

    def invoke(self, inputs: list) -> list:
        """Sets every model input (in order), runs the graph once, returns every output."""
        return self._worker.call("invoke", "invoke", self._input_arrays(inputs))

    def time_invokes(self, inputs: list, count: int) -> list:
        """Seconds of each of `count` invokes on `inputs`, timed inside the worker (no IPC)."""
        if count < 1:
            raise UserError(f"count must be at least 1, got {count}")
        return self._worker.call("time_invokes", "time invokes", self._input_arrays(inputs), count)

    def _input_arrays(self, inputs: list) -> list:
        if len(inputs) != self.num_inputs:
            raise UserError(f"the model has {self.num_inputs} inputs, got {len(inputs)} arrays")
        return [np.ascontiguousarray(a) for a in inputs]

    def reset(self) -> None:
        """Zeroes the variable tensors (TFLM's Reset), e.g. to restart training."""
        self._worker.call("reset", "reset")

    def tensor(self, index: int) -> np.ndarray:
        """A copy of tensor `index` of subgraph 0 after the last invoke (variables included)."""
        if not self._preserve_all_tensors:
            raise UserError("tensor() needs TflmSession(..., preserve_all_tensors=True)")
        if not 0 <= index < self.num_tensors:
            raise UserError(f"tensor index {index} out of range: the model has {self.num_tensors} tensors")
        return self._worker.call("tensor", f"read tensor {index}", index)

    def model_bytes(self) -> bytes:
        """The model buffer as the interpreter holds it now: training must never write into it."""
        return self._worker.call("model_bytes", "read the model buffer")

    def allocations(self) -> dict:
        """Arena bytes in use: {"total", "head" (planned activations), "tail" (persistent)}."""
        if self._preserve_all_tensors:
            raise UserError("allocations() is only recorded without preserve_all_tensors")
        log = self._worker.call_for_log("print_allocations", "report allocations")
        found = {name: int(value) for name, value in _ALLOCATION_LINE.findall(log)}
        if set(found) != {"total", "head", "tail"}:
            raise UserError(f"unexpected TFLM allocation report: {log.strip()[:200]!r}")
        return found

    def close(self) -> None:
        self._worker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def run_once(model_bytes: bytes, inputs: list, arena_size: int | None = None) -> list:
    """Outputs of a single invoke in a fresh interpreter."""
    with TflmSession(model_bytes, arena_size) as session:
        return session.invoke(inputs)


def min_arena_bytes(model_bytes: bytes, max_arena_bytes: int = DEFAULT_ARENA_BYTES) -> int:
    """The smallest arena (bytes) this host interpreter prepares the model in.

    TFLM's allocation report ("total") is a lower bound but not always enough:
    the memory planner briefly needs extra room while planning. So the answer
    is searched upwards from "total": doubling steps, then bisection. Firmware
    using the plain MicroAllocator needs slightly less (smaller bookkeeping).
    """
    with TflmSession(model_bytes, max_arena_bytes) as session:
        total = session.allocations()["total"]
    probe = _ArenaProbe(model_bytes)
    try:
        too_small, step = total - 1, 64
        fits = total
        while not probe.prepares(fits):
            if fits >= max_arena_bytes:
                raise UserError(f"the model does not fit in a {max_arena_bytes}-byte arena")
            too_small, fits, step = fits, min(total + step, max_arena_bytes), step * 2
        while fits - too_small > 1:
            middle = (fits + too_small) // 2
            if probe.prepares(middle):
                fits = middle
            else:
                too_small = middle
        return fits
    finally:
        probe.close()


def _open(worker, library: str, model_bytes: bytes, arena_size: int, preserve_all_tensors: bool) -> dict:
    """(Re)creates the worker's interpreter; returns the model's input/output/tensor counts."""
    return worker.call("open", "prepare the model", library, native.REGISTERER, model_bytes,
                       arena_size, preserve_all_tensors)


class _ArenaProbe:
    """Prepares one model in arenas of different sizes, reusing a worker until one crashes."""

    def __init__(self, model_bytes: bytes):
        self._model = bytes(model_bytes)
        self._library = native.library_path()
        self._worker = None

    def prepares(self, arena_size: int) -> bool:
        if self._worker is None or not self._worker.alive:
            self._worker = _Worker()
        try:
            _open(self._worker, self._library, self._model, arena_size, False)
        except UserError:
            return False
        return True

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


class _Worker:
    """The worker process and its pipes; TFLM's stderr goes to an unlinked file."""

    def __init__(self):
        fd, log_path = tempfile.mkstemp(prefix="tflm-train-worker-", suffix=".log")
        os.close(fd)
        # O_APPEND for the writer and a separate reader: independent offsets.
        with open(log_path, "ab") as log_for_worker:
            self._log = open(log_path, "rb")
            os.unlink(log_path)
            self._process = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=log_for_worker)
        self._finalizer = weakref.finalize(self, _stop, self._process, self._log)

    def call(self, command: str, action: str, *args):
        return self._request(command, action, args)[0]

    def call_for_log(self, command: str, action: str, *args) -> str:
        return self._request(command, action, args)[1]

    def _request(self, command, action, args):
        if not self.alive:
            raise UserError(f"cannot {action}: the TFLM session is closed")
        try:
            pickle.dump((command, *args), self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._process.stdin.flush()
            status, value = pickle.load(self._process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            reason = self._exit_reason()
            log = self._new_log()
            self.close()
            raise UserError(f"TFLM could not {action}: {reason}{_tail(log)}") from None
        log = self._new_log()
        if status == "error":
            raise UserError(f"TFLM could not {action} ({value}){_tail(log)}")
        return value, log

    def _new_log(self) -> str:
        return self._log.read().decode("utf-8", "replace")

    def _exit_reason(self) -> str:
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "the interpreter process stopped answering"
        if code < 0:
            return (f"the interpreter process crashed ({signal.Signals(-code).name}); a too-small "
                    "arena or a micro/host_abi that does not match the tflite-micro wheel are likely causes")
        return f"the interpreter process exited with status {code}"

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def close(self) -> None:
        self._finalizer()


def _stop(process: subprocess.Popen, log) -> None:
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def _tail(log: str, lines: int = 6) -> str:
    messages = [line.strip() for line in log.splitlines() if line.strip()]
    return ": " + "; ".join(messages[-lines:]) if messages else ""
