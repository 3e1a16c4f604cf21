"""Trainable parameters: arena variables seeded from their flash constants, with QAS update scales.

QAS (quantization-aware scaling) makes an SGD step on the int8 graph behave like
fp32 SGD on the real-valued weights: a real step -lr*g on W = s_w*W_q is
-lr*g/s_w on W_q, so the update scale of a weight is 1/s_w (the paper's
s_w^-2 applied to the int8-domain gradient s_w*g), and 1/(s_w*s_x) for a bias
whose scale is s_w*s_x. Without QAS the scale is the raw int8-domain gradient
factor (s_w, s_w*s_x): the ablation that trains poorly.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train import ir
from tflm_train.converter import layers
from tflm_train.schema.training_ops_generated import ParamKind

# Dead channels (the reference models mark them with scale ~4e-9 and bias INT32_MIN)
# and degenerate scales get update scale 0: they stay frozen.
MIN_LIVE_SCALE = 1e-30


@dataclasses.dataclass(eq=False)
class Param:
    kind: int                  # ParamKind
    layer: ir.Op
    variable: ir.Tensor
    initial: ir.Tensor
    qas_scale: ir.Tensor
    param_id: int
    channel_axis: int          # axis of the output channel within the variable
    # A weight's fractional bits (int8 variable of its shape; docs/training_ops.md), or None.
    fraction: ir.Tensor = None


@dataclasses.dataclass(eq=False)
class LayerParams:
    layer: ir.Op
    weight: Param = None
    bias: Param = None

    @property
    def split(self) -> bool:
        return self.weight is not None and self.weight.variable.shape[-1] < self.layer.inputs[1].shape[-1]

    def params(self) -> list:
        return [p for p in (self.weight, self.bias) if p is not None]


def update_scales(real: np.ndarray, qas: bool) -> np.ndarray:
    real = np.asarray(real, np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        scale = 1.0 / real if qas else real.copy()
    live = (real >= MIN_LIVE_SCALE) & np.isfinite(scale) & (np.abs(scale) < np.finfo(np.float32).max)
    return np.where(live, scale, 0.0).astype(np.float32)


def make_params(graph: ir.Graph, scheme, qas: bool, fractional_weights: bool = False) -> dict:
    """Creates the variables for every update in the scheme; keyed by id(layer op).

    `fractional_weights`: each trainable weight also gets 8 fractional bits (one more byte per
    element), so updates smaller than an LSB accumulate instead of being rounded away.
    """
    out = {}
    next_id = 0
    for update in scheme.updates:
        op = update.op
        name = op.outputs[0].name
        s_w = layers.weight_scales(op)
        s_x = float(op.inputs[0].quant.scale[0])
        lp = LayerParams(op)
        if update.weight_channels:
            w = op.inputs[1]
            depthwise = op.kind == "DEPTHWISE_CONV_2D"
            scales = update_scales(s_w, qas)
            if depthwise:
                # A depthwise weight is small: it lives whole in the arena and the
                # channels outside the ratio are frozen by a zero update scale.
                scales[update.weight_channels:] = 0
                shape = w.shape
            else:
                shape = w.shape[:-1] + (update.weight_channels,)
            var = graph.add_tensor(ir.Tensor(f"{name}/trainable_weight", shape, np.int8,
                                             quant=_sliced_quant(w.quant), is_variable=True))
            fraction = graph.add_tensor(ir.Tensor(f"{name}/trainable_weight_fraction", shape, np.int8,
                                                  is_variable=True)) if fractional_weights else None
            lp.weight = Param(ParamKind.WEIGHT, op, var, w, _const(graph, f"{name}/weight_update_scale", scales),
                              next_id, 3 if depthwise else 0, fraction)
            next_id += 1
        if update.bias:
            initial = _bias_constant(graph, op, s_w * s_x)
            var = graph.add_tensor(ir.Tensor(f"{name}/trainable_bias", initial.shape, np.int32,
                                             quant=initial.quant, is_variable=True))
            lp.bias = Param(ParamKind.BIAS, op, var, initial, _const(graph, f"{name}/bias_update_scale",
                                                                    update_scales(s_w * s_x, qas)), next_id, 0)
            next_id += 1
        out[id(op)] = lp
    return out


def _sliced_quant(quant: ir.Quant) -> ir.Quant:
    # The input-channel slice keeps every output channel, so the per-channel scales are unchanged.
    return ir.Quant(quant.scale.copy(), quant.zero_point.copy(), quant.axis)


def _bias_constant(graph: ir.Graph, op: ir.Op, bias_scale: np.ndarray) -> ir.Tensor:
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        return op.inputs[2]
    # A layer without bias gets a zero one so its bias can train.
    channels = layers.output_channels(op)
    return graph.add_tensor(ir.Tensor(f"{op.outputs[0].name}/initial_bias", (channels,), np.int32,
                                      np.zeros(channels, np.int32), ir.Quant(bias_scale, np.zeros(channels))))


def _const(graph: ir.Graph, name: str, values: np.ndarray) -> ir.Tensor:
    return graph.add_tensor(ir.Tensor(name, values.shape, values.dtype, values))
