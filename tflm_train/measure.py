"""Arena use of a model measured in the stock TFLM interpreter (`tflm-train inspect --measure`).

What a device must hold in SRAM for one training step is the tensor arena and
nothing else of ours: activations, gradients and the kernels' scratch are
planned in its head; the trainable weights and biases are variable tensors in
its tail (TFLT_TRAIN_INIT seeds them from flash); the model inputs (image,
label, learning rate) and outputs are planned arena tensors like any other.
Frozen weights stay in the read-only model buffer (flash), and no kernel keeps
state outside the arena. So peak_sram_bytes is the measured arena; the
interpreter object, op resolver and call stack are the application's.

The numbers are those of the pinned x86-64 tflite-micro wheel: 64-bit pointers
make its bookkeeping larger than on a 32-bit microcontroller.
"""
from __future__ import annotations

import numpy as np

from tflm_train import ir, tflm_runner
from tflm_train.converter import memory
from tflm_train.errors import UserError

LABEL_INPUT = "tflm_train/label"
LEARNING_RATE_INPUT = "tflm_train/learning_rate"


def measure(model_bytes: bytes) -> dict:
    """Smallest arena that prepares and invokes the model (a training step for training models)."""
    graph = ir.load(model_bytes)
    arena = tflm_runner.min_arena_bytes(model_bytes)
    with tflm_runner.TflmSession(model_bytes, arena) as session:
        used = session.allocations()
        try:
            session.invoke(step_inputs(graph))
        except UserError as error:
            raise UserError(f"the model prepares in a {arena}-byte arena but does not run in it "
                            f"(a kernel needs memory it did not request at Prepare): {error}") from None
    estimated = memory.estimate(graph).arena_bytes
    return {
        "measured_arena_bytes": arena,
        "measured_head_bytes": used["head"],
        "measured_tail_bytes": used["tail"],
        "peak_sram_bytes": arena,
        "arena_estimate_error": (estimated - arena) / arena,
    }


def step_inputs(graph: ir.Graph) -> list:
    """Zero inputs, except a valid label (class 0) and a small learning rate: one real training step."""
    special = {LABEL_INPUT: np.zeros(1, np.int32), LEARNING_RATE_INPUT: np.full(1, 1e-3, np.float32)}
    return [special.get(t.name, np.zeros(t.shape, t.dtype)) for t in graph.inputs]
