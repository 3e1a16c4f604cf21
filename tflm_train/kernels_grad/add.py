"""ADD (residual) gradient rule: no training op of its own."""
from __future__ import annotations

from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.converter import layers
from tflm_train.converter.autodiff import gradient_rule
from tflm_train.errors import UserError

@gradient_rule("ADD")
def add(ctx, op, dy, index):
    if layers.fused_activation(op) != schema.ActivationFunctionType.NONE:
        raise UserError(f"no gradient rule for ADD with a fused activation (op {index})")
    if op.inputs[0].shape != op.inputs[1].shape:
        raise UserError(f"no gradient rule for broadcasting ADD (op {index})")
    # In the real domain the residual ADD passes its gradient to both branches unchanged;
    # the input/output rescaling belongs to the int8 forward only.
    return {i: dy for i in (0, 1) if ctx.needs_grad(op.inputs[i])}
