"""The host build of the kernels against the pinned TFLM wheel, and the runner.

The canary op (micro/kernels/abi_canary.cc) echoes what the adapter read from
TFLM's structs, so a wrong offset in micro/host_abi shows up as wrong numbers.
"""
import importlib.metadata
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

from tflm_train import ir, native, tflm_runner
from tflm_train.errors import UserError

CANARY = "TFLT_ABI_CANARY"
CANARY_OUTPUT_SIZE = 9  # kAbiCanaryOutputSize: rank, 6 dims, dtype, options size
# Values of tflm_train::DType (micro/kernel_api.h).
DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.int32): 1, np.dtype(np.int8): 2}
MICRO = native.MICRO_DIR


def canary_graph(cases, output_size=CANARY_OUTPUT_SIZE, variable_outputs=False):
    """One canary op per (shape, dtype, options) case, each on its own graph input."""
    inputs, outputs, ops = [], [], []
    for i, (shape, dtype, options) in enumerate(cases):
        x = ir.Tensor(f"x{i}", shape, dtype)
        y = ir.Tensor(f"y{i}", (output_size,), np.int32, is_variable=variable_outputs)
        ops.append(ir.Op(CANARY, [x], [y], custom_options=options, custom=True))
        inputs.append(x)
        outputs.append(y)
    return ir.Graph(ops, inputs, outputs, inputs + outputs)


def expected_record(shape, dtype, options):
    dims = list(shape) + [0] * (6 - len(shape))
    return [len(shape), *dims, DTYPE_CODES[np.dtype(dtype)], len(options or b"")]


def test_installed_wheel_is_the_pinned_one():
    installed = importlib.metadata.version("tflite-micro")
    assert installed == native.PINNED_TFLM_WHEEL, (
        f"tflite-micro {installed} is installed, but micro/host_abi was derived from "
        f"{native.PINNED_TFLM_WHEEL}. Either install the pinned wheel, or re-derive every "
        "offset in micro/host_abi for the new wheel (micro/host_abi/README.md) and then "
        "update PINNED_TFLM_WHEEL in tflm_train/native.py.")


def test_canary_sees_tflm_structs_as_the_wheel_lays_them_out():
    cases = [((1, 3, 5, 7), np.int8, b"abc"),
             ((2, 4), np.float32, None),
             ((2, 1, 3, 1, 1, 2), np.int32, bytes(10))]
    model = ir.emit(canary_graph(cases))
    inputs = [np.zeros(shape, dtype) for shape, dtype, _ in cases]
    outputs = tflm_runner.run_once(model, inputs)
    assert [o.tolist() for o in outputs] == [expected_record(*case) for case in cases]


def test_library_exports_only_the_registerer():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not installed")
    listing = subprocess.run([nm, "-D", "--defined-only", native.library_path()],
                             capture_output=True, text=True, check=True).stdout
    functions = [line.split()[-1] for line in listing.splitlines() if line.split()[1] in "TW"]
    assert functions == [native.REGISTERER]


def test_unknown_custom_op_fails_cleanly():
    graph = canary_graph([((1, 4), np.int8, None)])
    graph.ops[0].kind = "TFLT_NO_SUCH_OP"
    with pytest.raises(UserError, match="could not prepare the model.*registration"):
        tflm_runner.TflmSession(ir.emit(graph))


def test_kernel_report_reaches_the_user():
    model = ir.emit(canary_graph([((1, 4), np.int8, None)], output_size=5))
    with pytest.raises(UserError, match=f"{CANARY}: output must be int32 with {CANARY_OUTPUT_SIZE} elements"):
        tflm_runner.TflmSession(model)


def test_variables_are_readable_and_reset_zeroes_them():
    case = ((1, 2, 3), np.int8, b"ab")
    model = ir.emit(canary_graph([case], variable_outputs=True))
    with tflm_runner.TflmSession(model, preserve_all_tensors=True) as session:
        variable = session.num_tensors - 1
        session.invoke([np.zeros(case[0], case[1])])
        assert session.tensor(variable).tolist() == expected_record(*case)
        session.reset()
        assert session.tensor(variable).tolist() == [0] * CANARY_OUTPUT_SIZE
        with pytest.raises(UserError, match="out of range"):
            session.tensor(session.num_tensors)


def test_session_rejects_misuse():
    model = ir.emit(canary_graph([((1, 4), np.int8, None)]))
    with tflm_runner.TflmSession(model) as session:
        with pytest.raises(UserError, match="1 inputs, got 2"):
            session.invoke([np.zeros((1, 4), np.int8)] * 2)
        with pytest.raises(UserError, match="expected type INT8"):
            session.invoke([np.zeros((1, 4), np.float32)])
        with pytest.raises(UserError, match="preserve_all_tensors"):
            session.tensor(0)
        # The session still works after rejected requests.
        assert session.invoke([np.zeros((1, 4), np.int8)])[0][0] == 2
    with pytest.raises(UserError, match="closed"):
        session.invoke([np.zeros((1, 4), np.int8)])


def test_worker_crash_becomes_user_error():
    model = ir.emit(canary_graph([((1, 4), np.int8, None)]))
    with tflm_runner.TflmSession(model) as session:
        os.kill(session._worker._process.pid, signal.SIGSEGV)
        with pytest.raises(UserError, match=r"crashed \(SIGSEGV\)"):
            session.invoke([np.zeros((1, 4), np.int8)])


def test_min_arena_is_the_smallest_that_prepares():
    model = ir.emit(canary_graph([((1, 8, 8, 3), np.int8, None), ((1, 16), np.float32, None)]))
    smallest = tflm_runner.min_arena_bytes(model)
    with tflm_runner.TflmSession(model, arena_size=smallest) as session:
        assert smallest >= session.allocations()["total"]
        session.invoke([np.zeros((1, 8, 8, 3), np.int8), np.zeros((1, 16), np.float32)])
    with pytest.raises(UserError):
        tflm_runner.TflmSession(model, arena_size=smallest - 1)


# ---------------------------------------------------------------- the build

def minimal_micro_tree(root):
    """micro/ with only the adapter and the canary: quick to build."""
    micro = root / "micro"
    for rel in ("kernel_api.h", "tflm_train.h", "kernels/abi_canary.h", "kernels/abi_canary.cc"):
        (micro / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MICRO / rel, micro / rel)
    for rel in ("host_abi", "adapter", "host"):
        shutil.copytree(MICRO / rel, micro / rel)
    (micro / "kernels" / "all_ops.cc").write_text(
        '#include "kernels/abi_canary.h"\n'
        "namespace tflm_train {\n"
        "const KernelOps* TrainingOps(int* count) {\n"
        "  static const KernelOps kOps[] = {AbiCanaryOp()};\n"
        "  *count = 1;\n"
        "  return kOps;\n"
        "}\n"
        "}  // namespace tflm_train\n")
    return micro


def test_library_is_rebuilt_only_when_a_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFLM_TRAIN_CACHE", str(tmp_path / "cache"))
    micro = minimal_micro_tree(tmp_path)
    first = native.library_path(micro)
    built_at = os.stat(first).st_mtime_ns
    assert native.library_path(micro) == first
    assert os.stat(first).st_mtime_ns == built_at

    canary = micro / "kernels" / "abi_canary.cc"
    canary.write_text(canary.read_text() + "// edited\n")
    second = native.library_path(micro)
    assert second != first and os.path.isfile(second)

    header = micro / "host_abi" / "tensorflow" / "lite" / "micro" / "micro_log.h"
    header.write_text(header.read_text() + "// edited\n")
    assert native.library_path(micro) not in (first, second)


def test_compile_error_is_a_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFLM_TRAIN_CACHE", str(tmp_path / "cache"))
    micro = minimal_micro_tree(tmp_path)
    (micro / "kernels" / "broken.cc").write_text("int broken() { return undeclared_name; }\n")
    with pytest.raises(UserError, match=r"micro/kernels/broken\.cc:1:\d+: error: .*undeclared_name") as info:
        native.library_path(micro)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_missing_compiler_is_a_user_error(monkeypatch):
    monkeypatch.setattr(native, "COMPILER", "g++-that-does-not-exist")
    with pytest.raises(UserError, match="g\\+\\+-that-does-not-exist not found: install build-essential"):
        native.library_path()


def test_other_wheel_version_is_refused(monkeypatch):
    monkeypatch.setattr(native, "PINNED_TFLM_WHEEL", "0.dev1")
    with pytest.raises(UserError, match="micro/host_abi describes 0.dev1"):
        native.library_path()
