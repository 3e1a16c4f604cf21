"""TFLT_MEAN_GRAD: backward of a global average pool (MEAN over H, W, or an
AVERAGE_POOL_2D whose window is the whole input)."""
from __future__ import annotations

import numpy as np

from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.converter.autodiff import gradient_rule
from tflm_train.errors import UserError
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


# ---------------------------------------------------------------- gradient rule (converter side)

@gradient_rule("MEAN", "AVERAGE_POOL_2D")
def global_average(ctx, op, dy, index):
    x = op.inputs[0]
    if len(x.shape) != 4 or not _is_global_average(op):
        raise UserError(f"no gradient rule for {op.kind} (op {index}) other than global average pooling over H, W")
    if not ctx.needs_grad(x):
        return {}
    dx = ctx.float_like(x)
    ctx.emit_custom("TFLT_MEAN_GRAD", [ctx.io.label, dy], [dx],
                    MeanGradOptions(input_height=x.shape[1], input_width=x.shape[2]))
    return {0: dx}


def _is_global_average(op) -> bool:
    x = op.inputs[0]
    if op.kind == "MEAN":
        axes = op.inputs[1].data if op.inputs[1] is not None else None
        return axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) == [1, 2]
    opts = op.options
    return (opts.filterHeight == x.shape[1] and opts.filterWidth == x.shape[2]
            and op.outputs[0].shape[1:3] == (1, 1)
            and opts.fusedActivationFunction == schema.ActivationFunctionType.NONE)
