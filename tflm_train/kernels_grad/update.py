"""TFLT_SGD_UPDATE and the QAS SGD update rule every parameter update uses."""
from __future__ import annotations

import numpy as np

from tflm_train.kernels_grad.common import F32, NEAREST, rounded_step

_INT8_STEP_LIMIT = F32(255.0)
_INT32_STEP_LIMIT = F32(4294967296.0)
_INT32_MIN, _INT32_MAX = -2 ** 31, 2 ** 31 - 1


def sgd_update(grad, param: np.ndarray, qas, lr: float, step: int, *,
               rounding: int = NEAREST, param_id: int = 0, channel_axis: int = 0) -> None:
    """Updates `param` (int8 weight or int32 bias variable) in place.

    grad: float32, `param`'s element count; qas: float32 per output channel (at least
    as many as `param` has along `channel_axis`); lr: `lr[0]`; step: `state[1]`.
    """
    if param.dtype not in (np.int8, np.int32):
        raise ValueError(f"cannot update a {param.dtype} parameter")
    grad = np.asarray(grad, F32).reshape(param.shape)
    axis = channel_axis % param.ndim
    channels = param.shape[axis]
    qas = np.asarray(qas, F32).reshape(-1)[:channels]
    qas = qas.reshape([channels if d == axis else 1 for d in range(param.ndim)])
    index = np.arange(param.size).reshape(param.shape)
    r = rounded_step(grad, np.broadcast_to(qas, param.shape), lr,
                     rounding=rounding, param_id=param_id, step=step, index=index)
    unchanged = np.isnan(r)
    r = np.where(unchanged, F32(0.0), r)
    if param.dtype == np.int8:
        r = np.clip(r, -_INT8_STEP_LIMIT, _INT8_STEP_LIMIT).astype(np.int32)
        new = np.clip(param.astype(np.int32) - r, -127, 127)
    else:
        r = np.clip(r, -_INT32_STEP_LIMIT, _INT32_STEP_LIMIT).astype(np.int64)
        new = np.clip(param.astype(np.int64) - r, _INT32_MIN, _INT32_MAX)
    param[...] = np.where(unchanged, param, new)
