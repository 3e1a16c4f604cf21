"""Runs .tflite models in the pinned TFLM Python interpreter, in a child process.

TFLM must not share a process with TensorFlow (the two have aborted together),
and it segfaults on too-small arenas: a child process keeps both away from
pytest. Importing this module is safe anywhere; only the child imports TFLM.

    outputs = run_tflm(model_bytes, [x])                      # one invoke
    steps = run_tflm_invocations(model_bytes, [[x0], [x1]])   # same interpreter, in order
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np

DEFAULT_ARENA_MIN = 1 << 20


def run_tflm(model_bytes: bytes, inputs: list, arena_size: int | None = None,
             custom_op_registerers=(), env: dict | None = None) -> list:
    """Invokes the model once on `inputs` (one array per model input); returns its outputs."""
    return run_tflm_invocations(model_bytes, [inputs], arena_size=arena_size,
                                custom_op_registerers=custom_op_registerers, env=env)[0]


def run_tflm_invocations(model_bytes: bytes, input_sets: list, *, arena_size: int | None = None,
                         custom_op_registerers=(), read_tensors=(), reset_between: bool = False,
                         env: dict | None = None) -> list:
    """Invokes one interpreter once per entry of `input_sets`, in order (variables persist
    unless `reset_between`). Returns, per invocation, the model outputs followed by the
    values of the subgraph tensors listed in `read_tensors` (by index) after that invoke.

    `arena_size` defaults to ten times the model plus 1 MiB; `env` adds environment
    variables for the child (e.g. to load a custom-op library).
    """
    job = {
        "model": bytes(model_bytes),
        "input_sets": [[np.ascontiguousarray(a) for a in inputs] for inputs in input_sets],
        "arena_size": int(arena_size or 10 * len(model_bytes) + DEFAULT_ARENA_MIN),
        "registerers": list(custom_op_registerers),
        "read_tensors": [int(i) for i in read_tensors],
        "reset_between": bool(reset_between),
    }
    child_env = dict(os.environ, **(env or {}))
    done = subprocess.run([sys.executable, os.path.abspath(__file__)], input=pickle.dumps(job),
                          capture_output=True, env=child_env, timeout=600)
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        tail = done.stderr.decode("utf-8", "replace")[-3000:]
        raise RuntimeError(f"TFLM child process failed ({how}):\n{tail}")
    return pickle.loads(done.stdout)


def _count_outputs(model_bytes: bytes) -> int:
    from tflite_micro.tensorflow.lite.python import schema_py_generated as schema
    return schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0).OutputsLength()


def _child_main() -> None:
    job = pickle.loads(sys.stdin.buffer.read())
    # Anything TFLM prints goes to stderr; stdout carries only the pickled result.
    result_stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    from tflite_micro.python.tflite_micro import runtime
    config = (runtime.InterpreterConfig.kPreserveAllTensors if job["read_tensors"]
              else runtime.InterpreterConfig.kAllocationRecording)
    interpreter = runtime.Interpreter.from_bytes(job["model"], custom_op_registerers=job["registerers"],
                                                 arena_size=job["arena_size"], intrepreter_config=config)
    output_count = _count_outputs(job["model"])
    results = []
    for inputs in job["input_sets"]:
        if job["reset_between"] and results:
            interpreter.reset()
        for i, data in enumerate(inputs):
            interpreter.set_input(data, i)
        interpreter.invoke()
        values = [np.array(interpreter.get_output(i)) for i in range(output_count)]
        values += [np.array(interpreter.GetTensor(t, 0)["tensor_data"]) for t in job["read_tensors"]]
        results.append(values)
    pickle.dump(results, result_stream)
    result_stream.close()


if __name__ == "__main__":
    _child_main()
