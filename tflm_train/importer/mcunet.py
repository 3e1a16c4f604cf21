"""Imports the reference implementation's int8 models (MCUNet / MobileNetV2 .pkl) as .tflite graphs.

The graph is a standard int8 TFLite classifier with per-channel weights:
input int8 [1,R,R,3] -> first conv -> blocks (pointwise1 / depthwise / pointwise2 and
a residual ADD) -> AVERAGE_POOL_2D over the whole map -> FULLY_CONNECTED (logits)
-> SOFTMAX (int8, scale 1/256, zero point -128).

Choices that keep TFLM's integer output equal to the pickle's (see mcunet_sim.py):
- Padding: the reference pads (k-1)//2 on every side. Where TFLite SAME pads the same
  rows/columns (stride 1, odd kernels) the conv is SAME; elsewhere (stride 2: SAME
  would pad only bottom/right) an explicit PAD, whose value is the input zero point,
  feeds a VALID conv.
- Activations: every conv output is only clamped to [-128, 127]; ReLU/ReLU6 is folded
  into that range when y_zero = -128 (the pickles' `act` field is None everywhere).
  Such outputs declare fused RELU6 (or RELU when 6.0 lies beyond the int8 range, so
  that RELU6 would clamp more than the pickle), whose TFLM range is exactly
  [-128, 127]; the training converter reads the activation from there. Other outputs
  are NONE.
- Global pooling is AVERAGE_POOL_2D, not MEAN: TFLM's int8 AVERAGE_POOL_2D divides the
  raw sum once (round half away from zero), so it differs from the pickle's
  round-half-to-even mean only on exact ties, while TFLM's int8 MEAN rounds twice
  (fixed-point 1/N multiplier, then the shift) and is off by one more often.
- Constant ("dead") channels: see `_live_weights`.
- Remaining differences are TFLM's fixed-point rounding of requantization and of ADD,
  at most one LSB per op.

`--num-classes N` replaces the 1000-class head by a fresh one (`with_new_head`):
float weights drawn from U(-1/sqrt(C), 1/sqrt(C)) (PyTorch's default Linear init,
Kaiming-uniform with a = sqrt(5)) with numpy's default_rng(seed), quantized
symmetrically per output channel (scale = max|w| / 127); bias 0. Its logits keep the
pretrained head's output scale (the logit range the pretrained features produce) with
zero point 0, since a fresh head favours no class.

`--resolution R` rebuilds every activation shape for an R x R input with the reference
implementation's output-size rule; the pooling window follows the final map.
"""
from __future__ import annotations

import copy
import math
import os

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.importer.pickle_format import (CONV_KEYS, is_depthwise, kernel_hw, load_model_pickle,
                                               torch_output_size, torch_padding)

ACT = schema.ActivationFunctionType
PADDING = schema.Padding
SOFTMAX_SCALE = 1.0 / 256.0
SOFTMAX_ZERO_POINT = -128
MAX_RESOLUTION = 1024            # activations beyond this do not fit any microcontroller
# Builtin versions the TFLite converter gives these int8 ops (TFLM ignores them).
_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2, "PAD": 2,
             "AVERAGE_POOL_2D": 2, "SOFTMAX": 2}


def import_mcunet(pkl_path: str, num_classes=None, resolution=None, seed: int = 0) -> ir.Graph:
    """The .tflite graph of a reference-implementation .pkl model (UserError on bad input)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    model = load_model_pickle(pkl_path)
    if num_classes is not None:
        model = with_new_head(model, num_classes, seed)
    return build_graph(model, resolution, name=os.path.splitext(os.path.basename(pkl_path))[0])


def native_resolution(model: dict) -> int:
    size = model["first_conv"].get("in_shape")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError("model pickle: first_conv has no in_shape; give the input size with --resolution")
    return size


def with_new_head(model: dict, num_classes, seed: int = 0) -> dict:
    """A copy of the model dict whose classifier is a fresh `num_classes` head (init: module docstring)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise UserError(f"--num-classes must be an integer >= 2, got {num_classes!r}")
    old = model["classifier"]
    fan_in = old["in_channel"]
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(fan_in)
    w = rng.uniform(-bound, bound, size=(int(num_classes), fan_in))
    w_scales = (np.abs(w).max(axis=1) / 127.0).astype(np.float32)
    weight = np.clip(np.round(w / w_scales[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    params = dict(old["params"], weight=weight.reshape(int(num_classes), fan_in, 1, 1),
                  bias=np.zeros(int(num_classes), np.int32), w_scales=w_scales, y_zero=0)
    new = copy.copy(model)
    new["classifier"] = dict(old, out_channel=int(num_classes), params=params)
    return new


def build_graph(model: dict, resolution=None, name: str = "") -> ir.Graph:
    """The int8 graph of a validated model dict for an R x R input (default: the model's own)."""
    if resolution is None:
        resolution = native_resolution(model)
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) \
            or not 1 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"--resolution must be an integer in [1, {MAX_RESOLUTION}], got {resolution!r}")
    first = model["first_conv"]
    b = _Builder(name)
    x = b.activation("input", (1, resolution, resolution, first["in_channel"]),
                     first["params"]["x_scale"], first["params"]["x_zero"])
    b.graph.inputs.append(x)

    x = b.conv(x, first, "first_conv")
    for i, block in enumerate(model["blocks"]):
        block_input = x
        for key in CONV_KEYS:
            if block[key] is not None:
                x = b.conv(x, block[key], f"blocks.{i}.{key}")
        if block["residual"] is not None:
            x = b.add(block_input, x, block["residual"]["params"], f"blocks.{i}.residual")
    x = b.global_average_pool(x, "avgpool")
    logits = b.classifier(x, model["classifier"], "classifier")
    b.graph.outputs.append(b.softmax(logits, "softmax"))
    return b.graph


class _Builder:
    def __init__(self, name: str):
        self.graph = ir.Graph(ops=[], inputs=[], outputs=[], tensors=[], name=name,
                              description="imported from a reference-implementation int8 model (tflm-train)")

    def tensor(self, name, shape, dtype, data=None, quant=None) -> ir.Tensor:
        return self.graph.add_tensor(ir.Tensor(name, shape, dtype, data, quant))

    def activation(self, name, shape, scale, zero_point) -> ir.Tensor:
        return self.tensor(name, shape, np.int8, quant=ir.Quant([scale], [zero_point]))

    def op(self, kind, inputs, outputs, options=None):
        self.graph.ops.append(ir.Op(kind, inputs, outputs, options, version=_VERSIONS[kind]))

    def conv(self, x: ir.Tensor, cfg: dict, name: str) -> ir.Tensor:
        p = cfg["params"]
        _check_input_quant(x, p["x_scale"], p["x_zero"], name)
        kh, kw = kernel_hw(cfg)
        ph, pw = torch_padding(cfg)
        stride = cfg["stride"]
        _, height, width, _ = x.shape
        ho, wo = torch_output_size(height, kh, stride, ph), torch_output_size(width, kw, stride, pw)
        if _tflite_same_matches(height, kh, stride, ph) and _tflite_same_matches(width, kw, stride, pw):
            padding = PADDING.SAME
        else:
            padding = PADDING.VALID
            if ph or pw:
                x = self.pad(x, ph, pw, f"{name}/pad")

        weight, bias, w_scales = _live_weights(cfg)
        depthwise = is_depthwise(cfg)
        if depthwise:   # OIHW [C,1,k,k] -> [1,k,k,C], quantized along the last axis
            w_data, axis, kind = weight.transpose(1, 2, 3, 0), 3, "DEPTHWISE_CONV_2D"
            options = schema.DepthwiseConv2DOptionsT()
            options.depthMultiplier = 1
        else:           # OIHW -> OHWI
            w_data, axis, kind = weight.transpose(0, 2, 3, 1), 0, "CONV_2D"
            options = schema.Conv2DOptionsT()
        options.padding = padding
        options.strideH = options.strideW = stride
        options.fusedActivationFunction = _fused_activation(p["y_scale"], p["y_zero"])
        w = self.tensor(f"{name}/weight", w_data.shape, np.int8, w_data,
                        ir.Quant(w_scales, np.zeros(len(w_scales)), axis))
        bias_t = self._bias(bias, p["x_scale"], w_scales, f"{name}/bias")
        y = self.activation(f"{name}/output", (1, ho, wo, cfg["out_channel"]), p["y_scale"], p["y_zero"])
        self.op(kind, [x, w, bias_t], [y], options)
        return y

    def _bias(self, bias, x_scale, w_scales, name) -> ir.Tensor:
        scales = (np.float64(np.float32(x_scale)) * w_scales.astype(np.float64)).astype(np.float32)
        return self.tensor(name, bias.shape, np.int32, bias, ir.Quant(scales, np.zeros(len(scales))))

    def pad(self, x: ir.Tensor, ph: int, pw: int, name: str) -> ir.Tensor:
        """int8 PAD fills with the output zero point = the input's: a real zero, as the reference pads."""
        paddings = self.tensor(f"{name}/paddings", (4, 2), np.int32,
                               np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32))
        _, height, width, channels = x.shape
        y = self.tensor(f"{name}/output", (1, height + 2 * ph, width + 2 * pw, channels), np.int8,
                        quant=ir.Quant(x.quant.scale, x.quant.zero_point))
        self.op("PAD", [x, paddings], [y], schema.PadOptionsT())
        return y

    def add(self, a: ir.Tensor, b: ir.Tensor, params: dict, name: str) -> ir.Tensor:
        _check_input_quant(a, params["x_scale"], params["x_zero"], name)
        y = self.activation(f"{name}/output", a.shape, params["y_scale"], params["y_zero"])
        options = schema.AddOptionsT()
        options.fusedActivationFunction = ACT.NONE
        self.op("ADD", [a, b], [y], options)
        return y

    def global_average_pool(self, x: ir.Tensor, name: str) -> ir.Tensor:
        _, height, width, channels = x.shape
        options = schema.Pool2DOptionsT()
        options.padding = PADDING.VALID
        options.strideH = options.strideW = 1
        options.filterHeight, options.filterWidth = height, width
        options.fusedActivationFunction = ACT.NONE
        y = self.tensor(f"{name}/output", (1, 1, 1, channels), np.int8,
                        quant=ir.Quant(x.quant.scale, x.quant.zero_point))
        self.op("AVERAGE_POOL_2D", [x], [y], options)
        return y

    def classifier(self, x: ir.Tensor, cfg: dict, name: str) -> ir.Tensor:
        p = cfg["params"]
        _check_input_quant(x, p["x_scale"], p["x_zero"], name)
        weight, bias, w_scales = _live_weights(cfg)
        w_data = weight.reshape(weight.shape[0], -1)
        w = self.tensor(f"{name}/weight", w_data.shape, np.int8, w_data,
                        ir.Quant(w_scales, np.zeros(len(w_scales)), 0))
        bias_t = self._bias(bias, p["x_scale"], w_scales, f"{name}/bias")
        y = self.activation(f"{name}/logits", (1, cfg["out_channel"]), p["y_scale"], p["y_zero"])
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = ACT.NONE
        self.op("FULLY_CONNECTED", [x, w, bias_t], [y], options)
        return y

    def softmax(self, logits: ir.Tensor, name: str) -> ir.Tensor:
        y = self.activation(f"{name}/output", logits.shape, SOFTMAX_SCALE, SOFTMAX_ZERO_POINT)
        options = schema.SoftmaxOptionsT()
        options.beta = 1.0
        self.op("SOFTMAX", [logits], [y], options)
        return y


def _check_input_quant(x: ir.Tensor, scale: float, zero_point: int, name: str) -> None:
    """A .tflite tensor has one quantization: the consumer's must be the producer's."""
    if not (math.isclose(float(x.quant.scale[0]), scale, rel_tol=1e-6) and int(x.quant.zero_point[0]) == zero_point):
        raise UserError(f"model pickle: {name} expects input scale {scale} zero point {zero_point}, but its input "
                        f"'{x.name}' has scale {float(x.quant.scale[0])} zero point {int(x.quant.zero_point[0])}")


def _tflite_same_matches(size: int, kernel: int, stride: int, pad: int) -> bool:
    """Whether TFLite SAME padding reads the same input positions as symmetric `pad`."""
    out = -(-size // stride)
    same_top = max((out - 1) * stride + kernel - size, 0) // 2
    return out == torch_output_size(size, kernel, stride, pad) and same_top == pad


def _fused_activation(y_scale: float, y_zero: int) -> int:
    if y_zero != -128:
        return ACT.NONE
    # TFLM's RELU6 upper bound: zero point + round-half-away(6 / scale) in float32.
    relu6_max = y_zero + int(math.floor(float(np.float32(6.0) / np.float32(y_scale)) + 0.5))
    return ACT.RELU6 if relu6_max >= 127 else ACT.RELU


def _live_weights(cfg: dict) -> tuple:
    """(weight, bias, w_scales) with constant channels rewritten so TFLM computes them exactly.

    Some channels produce the same output for every input: the dead ones (w_scale ~ 4e-9,
    bias INT32_MIN: their accumulator times the tiny scale is far below the int8
    minimum, so the output is the activation minimum). Kept as they are, TFLM would add
    INT32_MIN to a negative int32 accumulator (overflow) and store a meaningless scale.
    Found by interval arithmetic over all int8 inputs, each becomes: weights 0, weight
    scale = the layer's median live scale (so QAS training steps stay sensible), and the
    bias whose requantization gives the same constant, (c - y_zero) * y_scale /
    (x_scale * w_scale), which is 0 when c is the zero point (every dead channel seen:
    ReLU outputs with y_zero = -128). Any other channel must keep its accumulator inside int32.
    """
    p = cfg["params"]
    weight = p["weight"].copy()
    bias = p["bias"].astype(np.int64)
    w_scales = p["w_scales"].astype(np.float32).copy()
    x_zero, y_zero = p["x_zero"], p["y_zero"]
    eff = p["x_scale"] * w_scales.astype(np.float64) / p["y_scale"]

    w = weight.reshape(len(bias), -1).astype(np.int64)
    lo_x, hi_x = -128 - x_zero, 127 - x_zero   # padding contributes 0, inside this range
    acc_lo = np.minimum(w * lo_x, w * hi_x).sum(axis=1) + bias
    acc_hi = np.maximum(w * lo_x, w * hi_x).sum(axis=1) + bias

    def output(acc):
        return np.clip(np.round(acc * eff) + y_zero, -128, 127)

    constant = output(acc_lo) == output(acc_hi)
    live = ~constant
    int32 = np.iinfo(np.int32)
    if np.any(live & ((acc_lo < int32.min) | (acc_hi > int32.max))):
        raise UserError(f"model pickle: a {cfg['out_channel']}-channel conv can overflow its int32 accumulator")
    if np.any(constant):
        value = output(acc_lo)[constant]
        fill_scale = np.float32(np.median(w_scales[live])) if np.any(live) else np.float32(1.0 / 127.0)
        weight[constant] = 0
        w_scales[constant] = fill_scale
        bias_scale = np.float64(p["x_scale"]) * np.float64(fill_scale)
        bias[constant] = np.round((value - y_zero) * p["y_scale"] / bias_scale)
    return weight, bias.astype(np.int32), w_scales
