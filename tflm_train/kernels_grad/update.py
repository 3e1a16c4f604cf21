"""TFLT_SGD_UPDATE and the QAS SGD update rule every parameter update uses."""
from __future__ import annotations

import numpy as np

from tflm_train.kernels_grad.common import F32, decode_options, op_inputs, rounded_step, training_label
from tflm_train.reference.quantization import INT32_MAX, INT32_MIN
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import Rounding, SgdUpdateOptions

_INT8_STEP_LIMIT = F32(255.0)
_INT32_STEP_LIMIT = F32(4294967296.0)
# Fractional weights: the master value 256 * w + f counts 1/256 LSB.
FRACTION_UNIT = 256
_MASTER_STEP_LIMIT = F32(255 * FRACTION_UNIT)
_MASTER_LIMIT = 127 * FRACTION_UNIT


def sgd_update(grad, param: np.ndarray, qas, lr: float, step: int, *, rounding: int = Rounding.NEAREST,
               param_id: int = 0, channel_axis: int = 0, channel=None, fraction: np.ndarray = None) -> None:
    """Updates `param` (int8 weight or int32 bias variable) in place.

    grad: float32, `param`'s element count; qas: float32 per output channel (at least
    as many as `param` has along `channel_axis`); lr: `lr[0]`; step: `state[1]`.
    `channel` given: only that output channel's elements are updated and `grad` holds just
    them (an op streaming output channels; the hash still sees each element's flat index).
    `fraction` (int8, `param`'s shape, updated in place): the int8 weight's fractional bits.
    """
    if param.dtype not in (np.int8, np.int32):
        raise ValueError(f"cannot update a {param.dtype} parameter")
    if fraction is not None and (param.dtype != np.int8 or fraction.dtype != np.int8
                                 or fraction.shape != param.shape):
        raise ValueError("fractional bits need an int8 weight and an int8 fraction of its shape")
    axis = channel_axis % param.ndim
    channels = param.shape[axis]
    qas = np.asarray(qas, F32).reshape(-1)[:channels]
    qas = qas.reshape([channels if d == axis else 1 for d in range(param.ndim)])
    index = np.arange(param.size).reshape(param.shape)
    if channel is not None:
        part = (slice(None),) * axis + (slice(channel, channel + 1),)
        param, qas, index = param[part], qas[part], index[part]  # param[part] is a view: written in place
        fraction = None if fraction is None else fraction[part]
    grad = np.asarray(grad, F32).reshape(param.shape)
    r = rounded_step(grad, np.broadcast_to(qas, param.shape), lr, rounding=rounding, param_id=param_id,
                     step=step, index=index, unit=1 if fraction is None else FRACTION_UNIT)
    unchanged = np.isnan(r)
    r = np.where(unchanged, F32(0.0), r)
    if fraction is not None:
        r = np.clip(r, -_MASTER_STEP_LIMIT, _MASTER_STEP_LIMIT).astype(np.int32)
        master = np.clip(param.astype(np.int32) * FRACTION_UNIT + fraction - r, -_MASTER_LIMIT, _MASTER_LIMIT)
        weight = (master + FRACTION_UNIT // 2) // FRACTION_UNIT
        param[...] = np.where(unchanged, param, weight)
        fraction[...] = np.where(unchanged, fraction, master - weight * FRACTION_UNIT)
        return
    if param.dtype == np.int8:
        r = np.clip(r, -_INT8_STEP_LIMIT, _INT8_STEP_LIMIT).astype(np.int32)
        new = np.clip(param.astype(np.int32) - r, -127, 127)
    else:
        r = np.clip(r, -_INT32_STEP_LIMIT, _INT32_STEP_LIMIT).astype(np.int64)
        new = np.clip(param.astype(np.int64) - r, INT32_MIN, INT32_MAX)
    param[...] = np.where(unchanged, param, new)


@kernel("TFLT_SGD_UPDATE")
def sgd_update_kernel(op, args):
    label, lr, state, grad, param, qas, fraction = op_inputs(op, args, 7)
    if training_label(label) < 0:
        return []
    sgd_update(grad, param, qas, np.asarray(lr).reshape(-1)[0], int(state[1]),
               **decode_options(SgdUpdateOptions, op), fraction=fraction)
    return []
