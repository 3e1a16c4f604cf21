"""TFLT_SOFTMAX_XENT: softmax cross-entropy loss on int8 logits and its gradient."""
from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import (F32, decode_options, exp_ref, op_inputs, training_label,
                                            unspecified_outputs)
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import SoftmaxXentOptions


def softmax_xent(logits, label: int, *, logits_scale, logits_zero_point) -> tuple:
    """(loss float32, dlogits float32 with the logits' shape) for a label in [0, C)."""
    q = np.asarray(logits)
    classes = q.size
    if not 0 <= label < classes:
        raise UserError(f"label {label} is out of range for {classes} classes")
    z = (q.reshape(-1).astype(np.int32) - np.int32(logits_zero_point)).astype(F32) * F32(logits_scale)
    z_max = z.max()
    e = exp_ref(z - z_max)
    total = F32(0.0)
    for term in e:
        total = total + term
    p = e / total
    dlogits = p.copy()
    dlogits[label] = p[label] - F32(1.0)
    loss = np.log(total) - (z[label] - z_max)
    return F32(loss), dlogits.reshape(q.shape)


@kernel("TFLT_SOFTMAX_XENT")
def softmax_xent_kernel(op, args):
    logits, label = op_inputs(op, args, 2)
    label = training_label(label)
    if label < 0:
        return unspecified_outputs(op)   # loss 0; dlogits unspecified
    loss, dlogits = softmax_xent(logits, label, **decode_options(SoftmaxXentOptions, op))
    return [np.full(op.outputs[0].shape, loss, F32), dlogits.reshape(op.outputs[1].shape)]
