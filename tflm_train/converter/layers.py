"""Facts about conv-like forward layers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) that training ops need."""
from __future__ import annotations

import dataclasses

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import Window, resolve_padding
from tflm_train.reference.quantization import activation_range


@dataclasses.dataclass(frozen=True)
class Geometry:
    window: Window = Window()
    input_height: int = 1
    input_width: int = 1
    input_channels: int = 1
    depth_multiplier: int = 1

    def conv_fields(self) -> dict:
        """The window as the options tables name its fields (stride_h, ..., pad_left)."""
        return dataclasses.asdict(self.window)


def geometry(op: ir.Op) -> Geometry:
    x, w = op.inputs[0], op.inputs[1]
    if op.kind == "FULLY_CONNECTED":
        return Geometry(input_channels=w.shape[-1])
    opts = op.options
    _, h, wd, c = x.shape
    sh, sw = opts.strideH, opts.strideW
    dh, dw = max(opts.dilationHFactor, 1), max(opts.dilationWFactor, 1)
    padding = "SAME" if opts.padding == schema.Padding.SAME else "VALID"
    _, pad_top = resolve_padding(padding, h, w.shape[1], sh, dh)
    _, pad_left = resolve_padding(padding, wd, w.shape[2], sw, dw)
    return Geometry(Window(sh, sw, dh, dw, pad_top, pad_left), h, wd, c,
                    (opts.depthMultiplier or 1) if op.kind == "DEPTHWISE_CONV_2D" else 1)


def fused_activation(op: ir.Op) -> int:
    return getattr(op.options, "fusedActivationFunction", schema.ActivationFunctionType.NONE)


def activation_bounds(op: ir.Op) -> tuple:
    """(y for the straight-through mask or None, act_min, act_max) of the layer's fused activation."""
    act = fused_activation(op)
    if act == schema.ActivationFunctionType.NONE:
        return None, -128, 127
    y = op.outputs[0]
    if y.quant is None:
        raise UserError(f"{op.kind} output '{y.name}' is not quantized")
    lo, hi = activation_range(act, float(y.quant.scale[0]), int(y.quant.zero_point[0]))
    return y, int(lo), int(hi)


def output_channels(op: ir.Op) -> int:
    return op.outputs[0].shape[-1]


def weight_scales(op: ir.Op) -> np.ndarray:
    """Per-output-channel weight scale (a per-tensor scale is broadcast)."""
    w = op.inputs[1]
    scale = np.asarray(w.quant.scale, np.float64)
    return np.broadcast_to(scale, (output_channels(op),)).copy() if scale.size == 1 else scale


def check_quantized_layer(op: ir.Op, index: int) -> None:
    x, w = op.inputs[0], op.inputs[1]
    if w is None or w.dtype != np.int8 or w.quant is None:
        dtype = "missing" if w is None else w.dtype.name
        raise UserError(f"model is not int8-quantized: op {index} {op.kind} has {dtype} weights "
                        "(convert with full-integer quantization)")
    if x.dtype != np.int8 or x.quant is None:
        raise UserError(f"model is not int8-quantized: op {index} {op.kind} has {x.dtype.name} input")
    if x.shape[0] != 1:
        raise UserError(f"op {index} {op.kind}: batch size {x.shape[0]}; training runs at batch 1")
