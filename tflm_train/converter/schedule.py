"""Operator reordering: where each parameter update runs.

Reordered (the Tiny Training Engine's schedule): each layer's update is one fused op
right after the layer's input gradient, computing its weight gradient one output
channel at a time, so a full dW never exists and TFLM's planner frees the layer's
output gradient at once.
Conventional (`--no-reorder`): weight and bias gradients are materialised where
they become available and all updates are applied at the end, as frameworks do.
"""
from __future__ import annotations

import numpy as np

from tflm_train import ir
from tflm_train.converter import layers
from tflm_train.converter.autodiff import UpdateRequest
from tflm_train.schema.training_ops_generated import ConvUpdateOptions, Rounding, SgdUpdateOptions

# The inputs each updating op writes in place: its trainable variables (it only reads the rest,
# the training state and the weights of an input gradient included).
WRITTEN_SLOTS = {"TFLT_CONV_GRAD_UPDATE": (6, 8, 10), "TFLT_SGD_UPDATE": (4, 6),
                 "TFLT_DEPTHWISE_POINTWISE_GRAD": (11, 13, 20, 22)}


def written_variables(op: ir.Op) -> set:
    """ids of the tensors `op` writes in place."""
    return {id(op.inputs[slot]) for slot in WRITTEN_SLOTS.get(op.kind, ())
            if slot < len(op.inputs) and op.inputs[slot] is not None}


def schedule(emitted: list, ctx, reorder: bool, rounding: int) -> list:
    ops, deferred = [], []
    for item in emitted:
        if not isinstance(item, UpdateRequest):
            ops.append(item)
        elif reorder:
            ops.append(_fused_update(ctx, item, rounding))
        else:
            grads, updates = _materialised_update(ctx, item, rounding)
            ops.extend(grads)
            deferred.extend(updates)
    return ops + deferred


def _update_options(request: UpdateRequest, lp, rounding: int) -> ConvUpdateOptions:
    op = request.layer
    geo = layers.geometry(op)
    _, act_min, act_max = layers.activation_bounds(op)
    x = op.inputs[0]
    return ConvUpdateOptions(**geo.conv_fields(), x_zero_point=int(x.quant.zero_point[0]),
                             x_scale=float(x.quant.scale[0]), act_min=act_min, act_max=act_max,
                             depthwise=op.kind == "DEPTHWISE_CONV_2D", depth_multiplier=geo.depth_multiplier,
                             rounding=Rounding(rounding),
                             weight_param_id=lp.weight.param_id if lp.weight else 0,
                             bias_param_id=lp.bias.param_id if lp.bias else 0)


def _fused_update(ctx, request: UpdateRequest, rounding: int) -> ir.Op:
    lp = ctx.params_of(request.layer)
    y, _, _ = layers.activation_bounds(request.layer)
    w, b = lp.weight, lp.bias
    # x only for a weight gradient: a bias-only layer must not keep its input alive until the backward.
    x = request.layer.inputs[0] if w else None
    inputs = [ctx.io.label, ctx.io.learning_rate, ctx.io.state, request.dy, y, x,
              w and w.variable, w and w.qas_scale, b and b.variable, b and b.qas_scale]
    if w and w.fraction is not None:
        inputs.append(w.fraction)
    return ir.Op("TFLT_CONV_GRAD_UPDATE", inputs, [], custom=True, role="update",
                 custom_options=_update_options(request, lp, rounding).to_bytes())


def _materialised_update(ctx, request: UpdateRequest, rounding: int) -> tuple:
    lp = ctx.params_of(request.layer)
    y, _, _ = layers.activation_bounds(request.layer)
    options = _update_options(request, lp, rounding).to_bytes()
    grads, updates = [], []
    for param, kind, inputs in ((lp.weight, "TFLT_CONV_WEIGHT_GRAD", [request.layer.inputs[0]]),
                                (lp.bias, "TFLT_BIAS_GRAD", [])):
        if param is None:
            continue
        grad = ctx.graph.add_tensor(ir.Tensor(f"{param.variable.name}/grad", param.variable.shape, np.float32))
        grads.append(ir.Op(kind, [ctx.io.label, request.dy, y] + inputs, [grad], custom=True, role="backward",
                           custom_options=options))
        sgd = SgdUpdateOptions(rounding=Rounding(rounding), param_id=param.param_id, channel_axis=param.channel_axis)
        fraction = [param.fraction] if param.fraction is not None else []
        updates.append(ir.Op("TFLT_SGD_UPDATE", [ctx.io.label, ctx.io.learning_rate, ctx.io.state, grad,
                                                 param.variable, param.qas_scale] + fraction, [], custom=True,
                             role="update", custom_options=sgd.to_bytes()))
    return grads, updates
