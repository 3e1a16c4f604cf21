"""QUANTIZE/DEQUANTIZE gradient rule (model boundary): identity on real values."""
from __future__ import annotations

from tflm_train.converter.autodiff import gradient_rule

@gradient_rule("QUANTIZE", "DEQUANTIZE")
def identity(ctx, op, dy, index):
    # (De)quantisation is the identity on real values; the gradient tensor is reused as is.
    return {0: dy} if ctx.needs_grad(op.inputs[0]) else {}
