"""TFLT_ACTIVATION_MASK: a layer's fused-activation mask, packed 8 elements a byte, so
that the backward ops need not keep the layer's int8 output (see converter/masks.py)."""
from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import activation_passes, decode_options, op_inputs
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import ActivationMaskOptions


def pack_activation_mask(y, *, act_min: int, act_max: int) -> np.ndarray:
    """uint8 `[ceil(N/8)]`: bit i % 8 (LSB first) of byte i // 8 is act_min < y[i] < act_max for the
    N elements of int8 `y` in row-major order; the bits past N are 0."""
    y = np.asarray(y)
    if y.dtype != np.int8 or y.size == 0:
        raise UserError(f"TFLT_ACTIVATION_MASK: y must be a non-empty int8 tensor, got {y.dtype.name} {y.shape}")
    return np.packbits(activation_passes(y.reshape(-1), act_min, act_max), bitorder="little")


@kernel("TFLT_ACTIVATION_MASK")
def activation_mask_kernel(op, args):
    y, = op_inputs(op, args, 1)
    return [pack_activation_mask(y, **decode_options(ActivationMaskOptions, op))]
