"""RESHAPE/SQUEEZE gradient rule: the stock float32 RESHAPE restores the input shape."""
from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.converter.autodiff import gradient_rule

@gradient_rule("RESHAPE", "SQUEEZE")
def reshape(ctx, op, dy, index):
    x = op.inputs[0]
    if not ctx.needs_grad(x):
        return {}
    dx = ctx.float_like(x)
    options = schema.ReshapeOptionsT()
    options.newShape = list(x.shape)
    shape = ctx.const(f"{x.name}/grad_shape", np.asarray(x.shape, np.int32))
    ctx.emit_builtin("RESHAPE", [dy, shape], [dx], options)
    return {0: dx}
