"""DEPTHWISE_CONV_2D training math: TFLT_DEPTHWISE_INPUT_GRAD, the depthwise
weight gradient that TFLT_CONV_WEIGHT_GRAD / TFLT_CONV_GRAD_UPDATE select with
their `depthwise` option (those ops live in conv.py), and the forward
TFLT_DEPTHWISE_CONV_2D."""
from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import (F32, WINDOW_FIELDS, Window, activation_mask, as_image, decode_options,
                                            op_inputs, pick, requantize_channels, training_label,
                                            unspecified_outputs)
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import ConvGradOptions, DepthwiseConvOptions


def depthwise_input_grad(dy, y, w, w_scale, *, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                         pad_top=0, pad_left=0, input_height, input_width, input_channels,
                         depth_multiplier=1, act_min=-128, act_max=127) -> np.ndarray:
    """dx `[1, H, W, C]` from dy `[1, Ho, Wo, C*M]`, weight `w` `[1, kh, kw, C*M]` (int8)."""
    window = Window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
    m = depth_multiplier
    g = as_image(activation_mask(dy, y, act_min, act_max)) * np.asarray(w_scale, F32).reshape(-1)
    w = np.asarray(w).astype(F32)[0]
    dx = np.zeros((input_height, input_width, input_channels), F32)
    for kh, kw, out_rows, out_cols, in_rows, in_cols in window.tap_views(
            w.shape[:2], g.shape[:2], dx.shape[:2]):
        acc = dx[in_rows, in_cols]          # a view: updated in place
        g_tap = g[out_rows, out_cols]
        for j in range(m):                  # o = i*M + j
            acc += w[kh, kw, j::m] * g_tap[:, :, j::m]
    return dx[None]


def depthwise_weight_grad(md: np.ndarray, x_centered: np.ndarray, window: Window, weight_shape: tuple,
                          depth_multiplier: int) -> np.ndarray:
    """Unscaled dW `[1, kh, kw, C*M]`: sum over p of md[p, o] * x[ih, iw, o / M].

    md: `[Ho, Wo, C*M]` masked gradient; x_centered: float32 `[H, W, C]`, x - x_zp.
    """
    channels = weight_shape[-1]
    x_of_output = x_centered[:, :, np.arange(channels) // depth_multiplier]
    acc = np.zeros(weight_shape[1:], F32)
    for oh, ow, tap_rows, tap_cols, in_rows, in_cols in window.receptive_fields(
            weight_shape[1:3], md.shape[:2], x_centered.shape[:2]):
        acc[tap_rows, tap_cols] += md[oh, ow] * x_of_output[in_rows, in_cols]
    return acc[None]


def depthwise_conv2d(x, w, bias, multiplier, shift, *, output_height, output_width, stride_h=1, stride_w=1,
                     dilation_h=1, dilation_w=1, pad_top=0, pad_left=0, x_zero_point, y_zero_point,
                     act_min=-128, act_max=127, depth_multiplier=1) -> np.ndarray:
    """int8 y `[1, Ho, Wo, C*M]` of x `[1, H, W, C]` and w `[1, kh, kw, C*M]` (output channel
    o reads input channel o // M), bit-identical to TFLM's reference per-channel int8
    DEPTHWISE_CONV_2D with explicit padding. bias may be None."""
    window = Window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
    weight = np.asarray(w)[0].astype(np.int64)
    x_of_output = np.repeat(as_image(x).astype(np.int64) - x_zero_point, depth_multiplier, axis=-1)
    acc = np.zeros((output_height, output_width, weight.shape[-1]), np.int64)
    for kh, kw, out_rows, out_cols, in_rows, in_cols in window.tap_views(
            weight.shape[:2], acc.shape[:2], x_of_output.shape[:2]):
        acc[out_rows, out_cols] += x_of_output[in_rows, in_cols] * weight[kh, kw]
    return requantize_channels(acc, bias, multiplier, shift, y_zero_point, act_min, act_max)[None]


@kernel("TFLT_DEPTHWISE_INPUT_GRAD")
def depthwise_input_grad_kernel(op, args):
    label, dy, y, w, w_scale = op_inputs(op, args, 5)
    if training_label(label) < 0:
        return unspecified_outputs(op)
    options = decode_options(ConvGradOptions, op)
    dx = depthwise_input_grad(dy, y, w, w_scale, **pick(
        options, *WINDOW_FIELDS, "input_height", "input_width", "input_channels", "depth_multiplier",
        "act_min", "act_max"))
    return [dx.reshape(op.outputs[0].shape)]


@kernel("TFLT_DEPTHWISE_CONV_2D")
def depthwise_conv2d_kernel(op, args):
    x, w, bias, multiplier, shift = op_inputs(op, args, 5)
    options = decode_options(DepthwiseConvOptions, op)
    out_shape = op.outputs[0].shape
    channels = np.shape(x)[-1] * options["depth_multiplier"]
    if np.ndim(x) != 4 or len(out_shape) != 4 or np.shape(w)[::3] != (1, channels) or out_shape[-1] != channels:
        raise UserError(f"{op.kind}: x {np.shape(x)}, w {np.shape(w)} and y {out_shape} do not fit "
                        f"depth_multiplier {options['depth_multiplier']}")
    y = depthwise_conv2d(x, w, bias, multiplier, shift, output_height=out_shape[1], output_width=out_shape[2],
                         **options)
    return [y.reshape(out_shape)]
