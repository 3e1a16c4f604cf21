"""DEPTHWISE_CONV_2D training math: TFLT_DEPTHWISE_INPUT_GRAD, and the depthwise
weight gradient that TFLT_CONV_WEIGHT_GRAD / TFLT_CONV_GRAD_UPDATE select with
their `depthwise` option (those ops live in conv.py)."""
from __future__ import annotations

import numpy as np

from tflm_train.kernels_grad.common import (F32, WINDOW_FIELDS, Window, activation_mask, as_image, decode_options,
                                            op_inputs, pick, training_label, unspecified_outputs)
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import ConvGradOptions


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
