"""Gradient rules, one per forward op kind. Gradients are float32 w.r.t. real values."""
from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.converter import layers
from tflm_train.converter.autodiff import gradient_rule
from tflm_train.errors import UserError
from tflm_train.schema.training_ops_generated import ConvGradOptions, MeanGradOptions


def effective_weights(op, layer_params) -> tuple:
    """(w, w_train) as the training ops take them: see 'split weights' in docs/training_ops.md."""
    if layer_params is None or layer_params.weight is None:
        return op.inputs[1], None
    if layer_params.split:
        return op.inputs[1], layer_params.weight.variable
    return layer_params.weight.variable, None


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


@gradient_rule("ADD")
def add(ctx, op, dy, index):
    if layers.fused_activation(op) != schema.ActivationFunctionType.NONE:
        raise UserError(f"no gradient rule for ADD with a fused activation (op {index})")
    if op.inputs[0].shape != op.inputs[1].shape:
        raise UserError(f"no gradient rule for broadcasting ADD (op {index})")
    # In the real domain the residual ADD passes its gradient to both branches unchanged;
    # the input/output rescaling belongs to the int8 forward only.
    return {i: dy for i in (0, 1) if ctx.needs_grad(op.inputs[i])}


@gradient_rule("MEAN", "AVERAGE_POOL_2D")
def global_average(ctx, op, dy, index):
    x = op.inputs[0]
    if len(x.shape) != 4 or not _is_global_average(op):
        raise UserError(f"no gradient rule for {op.kind} (op {index}) other than global average pooling over H, W")
    if not ctx.needs_grad(x):
        return {}
    dx = ctx.float_like(x)
    ctx.emit_custom("TFLT_MEAN_GRAD", [ctx.io.label, dy], [dx],
                    MeanGradOptions(input_height=x.shape[1], input_width=x.shape[2]))
    return {0: dx}


def _is_global_average(op) -> bool:
    x = op.inputs[0]
    if op.kind == "MEAN":
        axes = op.inputs[1].data if op.inputs[1] is not None else None
        return axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) == [1, 2]
    opts = op.options
    return (opts.filterHeight == x.shape[1] and opts.filterWidth == x.shape[2]
            and op.outputs[0].shape[1:3] == (1, 1)
            and opts.fusedActivationFunction == schema.ActivationFunctionType.NONE)


@gradient_rule("RESHAPE", "SQUEEZE")
def reshape(ctx, op, dy, index):
    x = op.inputs[0]
    if not ctx.needs_grad(x):
        return {}
    dx = ctx.float_like(x)
    options = schema.ReshapeOptionsT()
    options.newShape = list(x.shape)
    shape = ctx.const(f"{x.name}/grad_shape", np.asarray(x.shape, np.int32))
    ctx.emit_builtin("RESHAPE", [dy, shape], [dx], options)
    return {0: dx}


@gradient_rule("PAD", "PADV2")
def pad(ctx, op, dy, index):
    x = op.inputs[0]
    if not ctx.needs_grad(x):
        return {}
    paddings = op.inputs[1].data
    if paddings is None:
        raise UserError(f"no gradient rule for {op.kind} with non-constant paddings (op {index})")
    dx = ctx.float_like(x)
    begin = ctx.const(f"{x.name}/grad_begin", np.asarray(paddings, np.int32)[:, 0].copy())
    size = ctx.const(f"{x.name}/grad_size", np.asarray(x.shape, np.int32))
    ctx.emit_builtin("SLICE", [dy, begin, size], [dx], schema.SliceOptionsT())
    return {0: dx}


@gradient_rule("QUANTIZE", "DEQUANTIZE")
def identity(ctx, op, dy, index):
    # (De)quantisation is the identity on real values; the gradient tensor is reused as is.
    return {0: dy} if ctx.needs_grad(op.inputs[0]) else {}
