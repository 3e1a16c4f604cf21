"""The process in which tflm_runner runs the stock TFLM interpreter.

Started by path (not as a package module) so that nothing from tflm_train, and
never TensorFlow, is imported next to TFLM. Protocol: the parent writes pickled
request tuples `(command, *args)` to stdin; each gets one pickled reply,
`("ok", value)` or `("error", message)`, on the original stdout. All TFLM output
(MicroPrintf, print_allocations) goes to stderr, which the parent reads.
"""
import ctypes
import os
import pickle
import sys
import time

# The script's own directory (tflm_train/) must not shadow top-level modules.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


class Worker:
    def __init__(self, runtime):
        self._runtime = runtime
        self._libraries = {}
        self._interpreter = None
        self._num_outputs = 0

    def open(self, library, registerer, model_bytes, arena_size, preserve_all_tensors):
        if library not in self._libraries:
            # RTLD_GLOBAL: the wheel finds the registerer with dlsym(RTLD_DEFAULT, ...).
            self._libraries[library] = ctypes.CDLL(library, mode=os.RTLD_GLOBAL)
        config = (self._runtime.InterpreterConfig.kPreserveAllTensors if preserve_all_tensors
                  else self._runtime.InterpreterConfig.kAllocationRecording)
        self._interpreter = None
        # The interpreter reads this very object (no copy): model_bytes() shows any write into it.
        self._model = model_bytes
        self._interpreter = self._runtime.Interpreter.from_bytes(
            model_bytes, custom_op_registerers=[registerer], arena_size=arena_size,
            intrepreter_config=config)
        from tflite_micro.tensorflow.lite.python import schema_py_generated as schema
        subgraph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
        self._num_outputs = subgraph.OutputsLength()
        return {"inputs": subgraph.InputsLength(), "outputs": self._num_outputs,
                "tensors": subgraph.TensorsLength()}

    def invoke(self, inputs):
        for index, array in enumerate(inputs):
            self._interpreter.set_input(array, index)
        self._interpreter.invoke()
        return [self._interpreter.get_output(i) for i in range(self._num_outputs)]

    def time_invokes(self, inputs, count):
        """Seconds of each of `count` invokes on the same inputs, timed around invoke() alone."""
        for index, array in enumerate(inputs):
            self._interpreter.set_input(array, index)
        seconds = []
        for _ in range(count):
            start = time.perf_counter()
            self._interpreter.invoke()
            seconds.append(time.perf_counter() - start)
        return seconds

    def reset(self):
        self._interpreter.reset()

    def tensor(self, index):
        return self._interpreter.GetTensor(index, 0)["tensor_data"]

    def model_bytes(self):
        return bytes(self._model)

    def print_allocations(self):
        self._interpreter.print_allocations()


def main():
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    # Anything else printed to stdout, by C or Python, must not corrupt replies.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from tflite_micro.python.tflite_micro import runtime
    worker = Worker(runtime)
    while True:
        try:
            command, *args = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = ("ok", getattr(worker, command)(*args))
        except Exception as exc:  # every failure goes back to the parent as text
            reply = ("error", str(exc) or type(exc).__name__)
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    main()
