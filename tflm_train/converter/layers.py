"""Facts about conv-like forward layers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) that training ops need."""
from __future__ import annotations

import dataclasses

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import Window, resolve_padding
from tflm_train.reference.quantization import activation_range, quantize_multiplier


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


def requantization(graph: ir.Graph, op: ir.Op) -> tuple:
    """Flash constants (multiplier, shift), int32 `[O]`, of a layer's per-channel output rescale
    s_x * s_w[o] / s_y, computed in double exactly as TFLM's Prepare computes them."""
    s_x, s_y = float(op.inputs[0].quant.scale[0]), float(op.outputs[0].quant.scale[0])
    pairs = [quantize_multiplier(s_x * float(s_w) / s_y) for s_w in weight_scales(op)]
    name = op.outputs[0].name
    multiplier = graph.add_tensor(ir.Tensor(f"{name}/multiplier", (len(pairs),), np.int32,
                                            np.array([m for m, _ in pairs], np.int32)))
    shift = graph.add_tensor(ir.Tensor(f"{name}/shift", (len(pairs),), np.int32,
                                       np.array([s for _, s in pairs], np.int32)))
    return multiplier, shift


def flash_requantized_fields(graph: ir.Graph, op: ir.Op, x: ir.Tensor, leading_pad=(0, 0)) -> tuple:
    """(fields, multiplier, shift) of an op of ours computing `op`'s int8 output with flash
    requantisation constants, from `x`: the input `op` reads, or that input without its leading
    zero-point padding `leading_pad` (top, left) (a folded PAD; the output shape fixes the rest).
    `fields` are the options SplitConvOptions and DepthwiseConvOptions share: the window with
    the padding added, the zero points and the activation range."""
    y = op.outputs[0]
    window = geometry(op).window
    window = dataclasses.replace(window, pad_top=window.pad_top + int(leading_pad[0]),
                                 pad_left=window.pad_left + int(leading_pad[1]))
    _, act_min, act_max = activation_bounds(op)
    multiplier, shift = requantization(graph, op)
    fields = dict(dataclasses.asdict(window), x_zero_point=int(x.quant.zero_point[0]),
                  y_zero_point=int(y.quant.zero_point[0]), act_min=act_min, act_max=act_max)
    return fields, multiplier, shift


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
