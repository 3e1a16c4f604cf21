"""PAD gradient rule: the stock float32 SLICE cuts the padding off the gradient."""
from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.converter.autodiff import gradient_rule
from tflm_train.errors import UserError

@gradient_rule("PAD", "PADV2")
def pad(ctx, op, dy, index):
    x = op.inputs[0]
    if not ctx.needs_grad(x):
        return {}
    paddings = op.inputs[1].data
    if paddings is None:
        raise UserError(f"no gradient rule for {op.kind} with non-constant paddings (op {index})")
    dx = ctx.float_like(x)
    begin = ctx.const(f"{x.name}/grad_begin", np.asarray(paddings, np.int32)[:, 0].copy())
    size = ctx.const(f"{x.name}/grad_size", np.asarray(x.shape, np.int32))
    ctx.emit_builtin("SLICE", [dy, begin, size], [dx], schema.SliceOptionsT())
    return {0: dx}
