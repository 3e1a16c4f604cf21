"""Numpy simulation of a reference-implementation model pickle's integer inference.

Written from the pickle's own parameters and structure, independent of the .tflite
graph and of TFLM, so the importer's output can be checked against it. The default
`rounding="reference"` follows the reference implementation's device-side
simulation (its quantized_ops.py):

- conv: `acc = sum (x - x_zero) * w` over windows of the input padded by (k-1)//2 on
  every side (a padded position contributes nothing); exact integers.
  `y = clamp(round((acc + bias) * eff) + y_zero, -128, 127)` with
  `eff = x_scale * w_scale / y_scale` computed in double and stored as float32 (the
  reference keeps it in a float32 buffer), the product taken in double.
- residual add: `y = clamp(round(((x1 - z1) * s1 + (x2 - z2) * s2) / s_y) + z_y)`, the
  scales float32, products and sum in float32, the division in double.
- global average pooling: `round(mean of the raw int8 values)`, quantization unchanged.
- classifier: the conv rule on the pooled 1x1 map; its int8 output is the logits.
`round` is round-half-to-even (torch.round). Dead channels (bias INT32_MIN) need no
special case: int64/double arithmetic cannot overflow.

`rounding="tflm"` keeps the structure and parameters but rounds as TFLM's reference
kernels do: requantization by the fixed-point multiplier of the float32 scales
(gemmlowp double rounding; accumulators saturated to int32, which only dead channels
reach, whose output is the int8 minimum either way), TFLM's fixed-point int8 ADD, and
average pooling rounding half away from zero. TFLM then must match it bit for bit,
while against "reference" it differs by one LSB on a fraction of a percent of each
layer's outputs (TFLM's double rounding), differences that compound through the network.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tflm_train.errors import UserError
from tflm_train.importer.pickle_format import CONV_KEYS, is_depthwise, kernel_hw, torch_output_size, torch_padding
from tflm_train.reference.quantization import INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, quantize_multiplier

ROUNDINGS = ("reference", "tflm")


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str                 # "first_conv", "blocks.3.depthwise", "blocks.2.residual", "avgpool", "classifier"
    kind: str                 # "conv", "add" or "avgpool"
    inputs: tuple             # names of the layers it reads; "input" is the image
    cfg: Optional[dict] = None  # conv: the conv dict; add: {"residual": params, "conv": params of the second operand}


def model_layers(pkl_model: dict) -> list:
    """The model's layers in execution order."""
    layers = [Layer("first_conv", "conv", ("input",), pkl_model["first_conv"])]
    for i, block in enumerate(pkl_model["blocks"]):
        block_input = layers[-1].name
        last_conv = None
        for key in CONV_KEYS:
            if block[key] is not None:
                layers.append(Layer(f"blocks.{i}.{key}", "conv", (layers[-1].name,), block[key]))
                last_conv = block[key]
        if block["residual"] is not None:
            layers.append(Layer(f"blocks.{i}.residual", "add", (block_input, layers[-1].name),
                                {"residual": block["residual"]["params"], "conv": last_conv["params"]}))
    layers.append(Layer("avgpool", "avgpool", (layers[-1].name,)))
    layers.append(Layer("classifier", "conv", ("avgpool",), pkl_model["classifier"]))
    return layers


def simulate_mcunet(pkl_model: dict, x_int8: np.ndarray, rounding: str = "reference") -> np.ndarray:
    """int8 logits [1, classes] of the model dict (pickle_format.load_model_pickle) for an int8 NHWC image [1, H, W, C]."""
    x = np.asarray(x_int8)
    channels = pkl_model["first_conv"]["in_channel"]
    if x.dtype != np.int8 or x.ndim != 4 or x.shape[0] != 1 or x.shape[3] != channels:
        raise UserError(f"simulate_mcunet: expected an int8 [1, H, W, {channels}] input, got {x.dtype} {x.shape}")
    values = {"input": x[0].astype(np.int64)}
    for layer in model_layers(pkl_model):
        values[layer.name] = run_layer(layer, [values[name] for name in layer.inputs], rounding)
    return values["classifier"].reshape(1, -1).astype(np.int8)


def run_layer(layer: Layer, inputs: list, rounding: str = "reference") -> np.ndarray:
    """One layer on int [H, W, C] arrays (int64 holding int8 values) -> its int64 [Ho, Wo, O] output."""
    if rounding not in ROUNDINGS:
        raise UserError(f"simulate_mcunet: rounding must be one of {ROUNDINGS}, got {rounding!r}")
    tflm = rounding == "tflm"
    if layer.kind == "conv":
        return _conv(np.asarray(inputs[0], np.int64), layer.cfg, tflm)
    if layer.kind == "add":
        return _residual_add(np.asarray(inputs[0], np.int64), np.asarray(inputs[1], np.int64),
                             layer.cfg["residual"], layer.cfg["conv"], tflm)
    return _average_pool(np.asarray(inputs[0], np.int64), tflm)


def _round_half_even(v: np.ndarray) -> np.ndarray:
    return np.round(v).astype(np.int64)


def _clamp_int8(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -128, 127)


def _conv(a: np.ndarray, cfg: dict, tflm: bool) -> np.ndarray:
    p = cfg["params"]
    kh, kw = kernel_hw(cfg)
    ph, pw = torch_padding(cfg)
    stride = cfg["stride"]
    height, width = a.shape[:2]
    ho = torch_output_size(height, kh, stride, ph)
    wo = torch_output_size(width, kw, stride, pw)
    # Integers below 2^53 in float64: the sums (BLAS included) are exact.
    x = np.pad(a - p["x_zero"], ((ph, ph), (pw, pw), (0, 0))).astype(np.float64)
    w = p["weight"].astype(np.float64)
    acc = np.zeros((ho, wo, w.shape[0]))
    for i in range(kh):
        for j in range(kw):
            window = x[i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride, :]
            if is_depthwise(cfg):
                acc += window * w[:, 0, i, j]
            else:
                acc += window @ w[:, :, i, j].T
    total = acc.astype(np.int64) + p["bias"].astype(np.int64)
    if tflm:
        f32 = np.float32
        multipliers = [quantize_multiplier(float(f32(p["x_scale"])) * float(s) / float(f32(p["y_scale"])))
                       for s in p["w_scales"].astype(np.float32)]
        m, shift = (np.array(v, np.int64) for v in zip(*multipliers))
        scaled = multiply_by_quantized_multiplier(np.clip(total, INT32_MIN, INT32_MAX), m, shift)
    else:
        eff = np.float64(p["x_scale"]) * p["w_scales"].astype(np.float64) / np.float64(p["y_scale"])
        scaled = _round_half_even(total.astype(np.float64) * eff.astype(np.float32).astype(np.float64))
    return _clamp_int8(scaled + p["y_zero"])


def _residual_add(x1: np.ndarray, x2: np.ndarray, residual: dict, conv: dict, tflm: bool) -> np.ndarray:
    """x1: the block input (the residual's x quantization), x2: the block's last conv output."""
    f32 = np.float32
    s1, s2, sy = f32(residual["x_scale"]), f32(conv["y_scale"]), f32(residual["y_scale"])
    d1, d2 = x1 - residual["x_zero"], x2 - conv["y_zero"]
    if tflm:
        # TFLM: both inputs to a common fixed-point scale (<< 20, then * s_i / (2 max s)), sum, rescale.
        left_shift = 20
        twice_max = 2.0 * float(max(s1, s2))
        scaled = [multiply_by_quantized_multiplier(d << left_shift, *quantize_multiplier(float(s) / twice_max))
                  for d, s in ((d1, s1), (d2, s2))]
        out = multiply_by_quantized_multiplier(scaled[0] + scaled[1],
                                               *quantize_multiplier(twice_max / ((1 << left_shift) * float(sy))))
    else:
        real = d1.astype(f32) * s1 + d2.astype(f32) * s2
        out = _round_half_even(real.astype(np.float64) / np.float64(sy))
    return _clamp_int8(out + residual["y_zero"])


def _average_pool(a: np.ndarray, tflm: bool) -> np.ndarray:
    """Mean of the raw int8 values over H and W; quantization unchanged."""
    count = a.shape[0] * a.shape[1]
    total = a.sum(axis=(0, 1))
    if tflm:   # C integer division of sum +- count/2: ties away from zero
        mean = np.sign(total) * ((np.abs(total) + count // 2) // count)
    else:
        mean = _round_half_even(total / float(count))
    return _clamp_int8(mean).reshape(1, 1, -1)
