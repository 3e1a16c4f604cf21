"""TFLT_DEPTHWISE_CONV_2D: a stock DEPTHWISE_CONV_2D with explicit padding and flash requantisation.

It saves arena in two ways: a preceding zero-point PAD can be folded into its
padding (the padded copy of the activation never exists), and its per-channel
multipliers/shifts are flash constants instead of TFLM's Prepare-time arena
arrays. Its output is bit-identical to the stock op (docs/training_ops.md).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from tflm_train import ir
from tflm_train.converter import layers
from tflm_train.errors import UserError
from tflm_train.schema.training_ops_generated import DepthwiseConvOptions


def explicit_depthwise_conv(graph: ir.Graph, op: ir.Op, pad: tuple = (0, 0),
                            x: Optional[ir.Tensor] = None) -> ir.Op:
    """The TFLT_DEPTHWISE_CONV_2D op computing exactly what the DEPTHWISE_CONV_2D `op` computes.

    Adds its multiplier/shift constants to `graph`; `op` itself is left unchanged (the caller
    swaps it out). Weight and bias are `op`'s inputs as they are now (constants or variables).
    To fold a PAD that feeds `op`, pass the PAD's input as `x` and its leading padding as
    `pad` = (top, left); the PAD must pad with x's zero point (PAD on int8 does), and `x` must
    have the PAD output's quantization. The output shape stays `op`'s.
    """
    if op.kind != "DEPTHWISE_CONV_2D":
        raise UserError(f"explicit_depthwise_conv takes a DEPTHWISE_CONV_2D, not {op.kind}")
    padded = op.inputs[0]
    x = padded if x is None else x
    if x.dtype != np.int8 or x.quant is None or padded.quant is None or \
            x.quant.scale[0] != padded.quant.scale[0] or x.quant.zero_point[0] != padded.quant.zero_point[0]:
        raise UserError(f"{op.kind} '{op.outputs[0].name}': input '{x.name}' must be int8 with the "
                        f"quantization of '{padded.name}'")
    fields, multiplier, shift = layers.flash_requantized_fields(graph, op, x, pad)
    _check_window(op, fields, x.shape, op.inputs[1].shape, op.outputs[0].shape)
    options = DepthwiseConvOptions(**fields, depth_multiplier=layers.geometry(op).depth_multiplier)
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    return ir.Op("TFLT_DEPTHWISE_CONV_2D", [x, op.inputs[1], bias, multiplier, shift], op.outputs, custom=True,
                 custom_options=options.to_bytes(), role=op.role)


def _check_window(op: ir.Op, fields: dict, x_shape, w_shape, y_shape) -> None:
    """What the kernel's Prepare accepts: padding within the dilated kernel and every
    output window starting inside the input."""
    for axis, side, pad_name in ((1, "h", "pad_top"), (2, "w", "pad_left")):
        size, out, kernel = x_shape[axis], y_shape[axis], w_shape[axis]
        stride, dilation, pad = fields[f"stride_{side}"], fields[f"dilation_{side}"], fields[pad_name]
        if not 0 <= pad <= (kernel - 1) * dilation or (out - 1) * stride - pad > size - 1:
            raise UserError(f"{op.kind} '{op.outputs[0].name}': padding {pad} does not fit a {kernel}-tap "
                            f"window (dilation {dilation}, stride {stride}) from {size} to {out} positions")
