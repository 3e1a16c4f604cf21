"""TFLT_MEAN_GRAD: backward of a global average pool (MEAN over H, W, or an
AVERAGE_POOL_2D whose window is the whole input)."""
from __future__ import annotations

import numpy as np

from tflm_train.kernels_grad.common import F32, decode_options, op_inputs, training_label, unspecified_outputs
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import MeanGradOptions


def mean_grad(dy, *, input_height, input_width) -> np.ndarray:
    """dx `[1, H, W, C]`: every position gets dy[c] / (H*W), as dy[c] * (1.0f / (float)(H*W))."""
    dy = np.asarray(dy, F32).reshape(-1)
    inverse_count = F32(1.0) / F32(input_height * input_width)
    dx = np.empty((1, input_height, input_width, dy.size), F32)
    dx[...] = dy * inverse_count
    return dx


@kernel("TFLT_MEAN_GRAD")
def mean_grad_kernel(op, args):
    label, dy = op_inputs(op, args, 2)
    if training_label(label) < 0:
        return unspecified_outputs(op)
    dx = mean_grad(dy, **decode_options(MeanGradOptions, op))
    return [dx.reshape(op.outputs[0].shape)]
