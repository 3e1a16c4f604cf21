"""CONV_2D / FULLY_CONNECTED training math (FC = 1×1 conv on a 1×1 image):
TFLT_CONV_INPUT_GRAD, TFLT_CONV_WEIGHT_GRAD, TFLT_BIAS_GRAD, TFLT_CONV_GRAD_UPDATE
(their depthwise variants dispatch to depthwise_conv.py) and TFLT_CONV_2D_SPLIT."""
from __future__ import annotations

import numpy as np

from tflm_train.kernels_grad import depthwise_conv
from tflm_train.kernels_grad.common import (F32, WINDOW_FIELDS, Window, activation_mask, as_image,
                                            decode_options, effective_weight, filter_shape, op_inputs, pick,
                                            requantize_channels, training_label, unspecified_outputs)
from tflm_train.kernels_grad.update import sgd_update
from tflm_train.converter import layers
from tflm_train.converter.autodiff import gradient_rule
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import ConvGradOptions, ConvUpdateOptions, Rounding, SplitConvOptions


# ---------------------------------------------------------------- backward

def conv_input_grad(dy, y, w, w_train, w_scale, *, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                    pad_top=0, pad_left=0, input_height, input_width, input_channels,
                    act_min=-128, act_max=127) -> np.ndarray:
    """dx `[1, H, W, I]` from dy `[1, Ho, Wo, O]` (or FC `[1, O]`), w `[O, kh, kw, I]` / `[O, I]`."""
    window = Window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
    g = as_image(activation_mask(dy, y, act_min, act_max)) * np.asarray(w_scale, F32).reshape(-1)
    weight = effective_weight(w, w_train).astype(F32)
    dx = np.zeros((input_height, input_width, input_channels), F32)
    for kh, kw, out_rows, out_cols, in_rows, in_cols in window.tap_views(
            weight.shape[1:3], g.shape[:2], dx.shape[:2]):
        acc = dx[in_rows, in_cols]                  # a view: updated in place
        g_tap = np.moveaxis(g[out_rows, out_cols], -1, 0)[..., None]
        w_tap = weight[:, kh, kw, :]
        for o in range(weight.shape[0]):
            acc += w_tap[o] * g_tap[o]
    return dx[None]


def bias_grad(dy, y, *, act_min=-128, act_max=127) -> np.ndarray:
    """db `[O]`: sum over output positions p (row-major) of md[p, o]."""
    md = activation_mask(dy, y, act_min, act_max)
    md = md.reshape(-1, md.shape[-1])
    acc = np.zeros(md.shape[1], F32)
    for row in md:
        acc += row
    return acc


def conv_weight_grad(dy, y, x, *, weight_shape, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                     pad_top=0, pad_left=0, x_zero_point, x_scale, act_min=-128, act_max=127,
                     depthwise=False, depth_multiplier=1) -> np.ndarray:
    """dW with the trainable weight variable's shape `weight_shape`:
    `[O, kh, kw, K]` / FC `[O, K]` (K <= I), or depthwise `[1, kh, kw, C*M]`."""
    window = Window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
    weight_shape = tuple(weight_shape)
    md = as_image(activation_mask(dy, y, act_min, act_max))
    if len(weight_shape) == 2:      # FULLY_CONNECTED flattens its input
        x = np.reshape(x, (1, -1))
    x_centered = (as_image(x).astype(np.int32) - np.int32(x_zero_point)).astype(F32)
    if depthwise:
        acc = depthwise_conv.depthwise_weight_grad(md, x_centered, window, weight_shape, depth_multiplier)
    else:
        acc = _conv_weight_sums(md, x_centered, window, filter_shape(weight_shape))
    return (acc * F32(x_scale)).reshape(weight_shape)


def _conv_weight_sums(md, x_centered, window: Window, shape: tuple) -> np.ndarray:
    """Unscaled dW `[O, kh, kw, K]`: sum over p of md[p, o] * x[ih, iw, i]."""
    x_trained = x_centered[:, :, :shape[-1]]
    acc = np.zeros(shape, F32)
    for oh, ow, tap_rows, tap_cols, in_rows, in_cols in window.receptive_fields(
            shape[1:3], md.shape[:2], x_centered.shape[:2]):
        acc[:, tap_rows, tap_cols] += md[oh, ow, :, None, None, None] * x_trained[in_rows, in_cols]
    return acc


def conv_grad_update(lr: float, step: int, dy, y, x, w_train, w_qas, b_train, b_qas, *, stride_h=1, stride_w=1,
                     dilation_h=1, dilation_w=1, pad_top=0, pad_left=0, x_zero_point, x_scale,
                     act_min=-128, act_max=127, depthwise=False, depth_multiplier=1,
                     rounding=Rounding.NEAREST, weight_param_id=0, bias_param_id=0, channel=None,
                     w_fraction=None) -> None:
    """The fused (reordered) schedule: updates `w_train` / `b_train` (either may be None) in place,
    and `w_fraction`, the weight's fractional bits, if given.

    Per element it is exactly TFLT_CONV_WEIGHT_GRAD / TFLT_BIAS_GRAD then TFLT_SGD_UPDATE:
    the gradient sums and the hash inputs are the same; only the C++ memory schedule differs.
    `channel` (conv/FC): dy holds only that output channel's gradient, and only its parameters
    are updated, as TFLT_DEPTHWISE_POINTWISE_GRAD streams them.
    """
    if b_train is not None and (channel is None or channel < b_train.size):
        gb = bias_grad(dy, y, act_min=act_min, act_max=act_max)[:b_train.size]
        sgd_update(gb, b_train, b_qas, lr, step, rounding=rounding, param_id=bias_param_id, channel_axis=0,
                   channel=channel)
    if w_train is not None:
        shape = w_train.shape if channel is None else (1,) + w_train.shape[1:]
        gw = conv_weight_grad(dy, y, x, weight_shape=shape, stride_h=stride_h, stride_w=stride_w,
                              dilation_h=dilation_h, dilation_w=dilation_w, pad_top=pad_top, pad_left=pad_left,
                              x_zero_point=x_zero_point, x_scale=x_scale, act_min=act_min, act_max=act_max,
                              depthwise=depthwise, depth_multiplier=depth_multiplier)
        sgd_update(gw, w_train, w_qas, lr, step, rounding=rounding, param_id=weight_param_id,
                   channel_axis=weight_channel_axis(w_train.ndim, depthwise), channel=channel, fraction=w_fraction)


def weight_channel_axis(rank: int, depthwise: bool) -> int:
    """The output-channel axis of a weight: last for depthwise `[1, kh, kw, C*M]`, else first."""
    return rank - 1 if depthwise else 0


# ---------------------------------------------------------------- forward

def conv2d_split(x, w, w_train, bias, multiplier, shift, *, output_height, output_width, stride_h=1, stride_w=1,
                 dilation_h=1, dilation_w=1, pad_top=0, pad_left=0, x_zero_point, y_zero_point,
                 act_min=-128, act_max=127) -> np.ndarray:
    """int8 y `[1, Ho, Wo, O]` of a per-channel int8 conv/FC whose weight is split;
    bit-identical to TFLM's reference kernels. w_train and bias may be None."""
    window = Window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
    if np.ndim(w) == 2:             # FULLY_CONNECTED flattens its input
        x = np.reshape(x, (1, -1))
    weight = effective_weight(w, w_train).astype(np.int64)
    x_centered = as_image(x).astype(np.int64) - x_zero_point
    acc = np.zeros((output_height, output_width, weight.shape[0]), np.int64)
    for kh, kw, out_rows, out_cols, in_rows, in_cols in window.tap_views(
            weight.shape[1:3], acc.shape[:2], x_centered.shape[:2]):
        acc[out_rows, out_cols] += x_centered[in_rows, in_cols] @ weight[:, kh, kw, :].T
    return requantize_channels(acc, bias, multiplier, shift, y_zero_point, act_min, act_max)[None]


# ---------------------------------------------------------------- reference-executor kernels

_WEIGHT_GRAD_FIELDS = WINDOW_FIELDS + ("x_zero_point", "x_scale", "act_min", "act_max", "depthwise",
                                       "depth_multiplier")


@kernel("TFLT_CONV_INPUT_GRAD")
def conv_input_grad_kernel(op, args):
    label, dy, y, w, w_train, w_scale = op_inputs(op, args, 6)
    if training_label(label) < 0:
        return unspecified_outputs(op)
    options = decode_options(ConvGradOptions, op)
    dx = conv_input_grad(dy, y, w, w_train, w_scale, **pick(
        options, *WINDOW_FIELDS, "input_height", "input_width", "input_channels", "act_min", "act_max"))
    return [dx.reshape(op.outputs[0].shape)]


@kernel("TFLT_CONV_WEIGHT_GRAD")
def conv_weight_grad_kernel(op, args):
    label, dy, y, x = op_inputs(op, args, 4)
    if training_label(label) < 0:
        return unspecified_outputs(op)
    options = decode_options(ConvUpdateOptions, op)
    return [conv_weight_grad(dy, y, x, weight_shape=op.outputs[0].shape, **pick(options, *_WEIGHT_GRAD_FIELDS))]


@kernel("TFLT_BIAS_GRAD")
def bias_grad_kernel(op, args):
    label, dy, y = op_inputs(op, args, 3)
    if training_label(label) < 0:
        return unspecified_outputs(op)
    options = decode_options(ConvUpdateOptions, op)
    db = bias_grad(dy, y, **pick(options, "act_min", "act_max"))
    return [db[:op.outputs[0].size].reshape(op.outputs[0].shape)]


@kernel("TFLT_CONV_GRAD_UPDATE")
def conv_grad_update_kernel(op, args):
    label, lr, state, dy, y, x, w_train, w_qas, b_train, b_qas, w_fraction = op_inputs(op, args, 11)
    if training_label(label) < 0:
        return []
    options = decode_options(ConvUpdateOptions, op)
    conv_grad_update(np.asarray(lr).reshape(-1)[0], int(state[1]), dy, y, x, w_train, w_qas, b_train, b_qas,
                     **pick(options, *_WEIGHT_GRAD_FIELDS, "rounding", "weight_param_id", "bias_param_id"),
                     w_fraction=w_fraction)
    return []


@kernel("TFLT_CONV_2D_SPLIT")
def conv2d_split_kernel(op, args):
    x, w, w_train, bias, multiplier, shift = op_inputs(op, args, 6)
    options = decode_options(SplitConvOptions, op)
    out_shape = op.outputs[0].shape
    out_h, out_w = out_shape[1:3] if len(out_shape) == 4 else (1, 1)
    y = conv2d_split(x, w, w_train, bias, multiplier, shift, output_height=out_h, output_width=out_w, **pick(
        options, *WINDOW_FIELDS, "x_zero_point", "y_zero_point", "act_min", "act_max"))
    return [y.reshape(out_shape)]


# ---------------------------------------------------------------- gradient rule (converter side)

def effective_weights(op, layer_params) -> tuple:
    """(w, w_train) as the training ops take them: see 'split weights' in docs/training_ops.md."""
    if layer_params is None or layer_params.weight is None:
        return op.inputs[1], None
    if layer_params.split:
        return op.inputs[1], layer_params.weight.variable
    return layer_params.weight.variable, None


# One rule for the conv-like kinds: only the emitted input-gradient op differs for a depthwise.
@gradient_rule("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
def conv_like(ctx, op, dy, index):
    grads = {}
    x = op.inputs[0]
    if ctx.needs_grad(x):
        y, act_min, act_max = layers.activation_bounds(op)
        geo = layers.geometry(op)
        w, w_train = effective_weights(op, ctx.params_of(op))
        w_scale = ctx.const(f"{op.outputs[0].name}/weight_scale", layers.weight_scales(op).astype(np.float32))
        dx = ctx.float_like(x)
        options = ConvGradOptions(**geo.conv_fields(), input_height=geo.input_height, input_width=geo.input_width,
                                  input_channels=geo.input_channels, depth_multiplier=geo.depth_multiplier,
                                  act_min=act_min, act_max=act_max)
        if op.kind == "DEPTHWISE_CONV_2D":
            ctx.emit_custom("TFLT_DEPTHWISE_INPUT_GRAD", [ctx.io.label, dy, y, w, w_scale], [dx], options)
        else:
            ctx.emit_custom("TFLT_CONV_INPUT_GRAD", [ctx.io.label, dy, y, w, w_train, w_scale], [dx], options)
        grads[0] = dx
    if ctx.params_of(op) is not None:
        # After the input gradient: that one must see the weights before this step's update.
        ctx.request_update(op, dy)
    return grads
