"""PAD gradient rule: cut the padding off the gradient.

When the padded tensor's gradient comes straight from a conv's input-gradient op
(the PAD + VALID conv an importer emits for PyTorch's symmetric padding), that op
computes the unpadded gradient itself: its window gets the PAD's leading padding and
its output the unpadded shape. Each kept element is summed over the same taps in the
same order, so the values are those of the SLICE, without the padded float tensor.
Otherwise the stock float32 SLICE does the cut.
"""
from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.converter.autodiff import gradient_rule
from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import decode_options
from tflm_train.schema.training_ops_generated import ConvGradOptions

INPUT_GRAD_KINDS = ("TFLT_CONV_INPUT_GRAD", "TFLT_DEPTHWISE_INPUT_GRAD")


@gradient_rule("PAD", "PADV2")
def pad(ctx, op, dy, index):
    x = op.inputs[0]
    if not ctx.needs_grad(x):
        return {}
    paddings = op.inputs[1].data
    if paddings is None:
        raise UserError(f"no gradient rule for {op.kind} with non-constant paddings (op {index})")
    paddings = np.asarray(paddings, np.int64)
    dx = ctx.float_like(x)
    if _fold_into_input_grad(ctx, dy, dx, paddings):
        return {0: dx}
    begin = ctx.const(f"{x.name}/grad_begin", paddings[:, 0].astype(np.int32))
    size = ctx.const(f"{x.name}/grad_size", np.asarray(x.shape, np.int32))
    ctx.emit_builtin("SLICE", [dy, begin, size], [dx], schema.SliceOptionsT())
    return {0: dx}


def _fold_into_input_grad(ctx, dy, dx, paddings: np.ndarray) -> bool:
    producer = next((op for op in ctx.emitted if any(t is dy for t in getattr(op, "outputs", ()))), None)
    if producer is None or producer.kind not in INPUT_GRAD_KINDS or len(dx.shape) != 4:
        return False
    if paddings[0].any() or paddings[3].any():      # batch or channel padding: not a spatial window
        return False
    if any(t is dy for op in ctx.emitted for t in getattr(op, "inputs", ())):
        return False
    options = decode_options(ConvGradOptions, producer)
    options.update(pad_top=options["pad_top"] + int(paddings[1, 0]),
                   pad_left=options["pad_left"] + int(paddings[2, 0]),
                   input_height=dx.shape[1], input_width=dx.shape[2])
    producer.custom_options = ConvGradOptions(**options).to_bytes()
    producer.outputs = [dx]
    return True
