"""Random stock int8 DEPTHWISE_CONV_2D layers (as ir ops) for the TFLT_DEPTHWISE_CONV_2D tests.

Each case is a stock op, optionally fed by a zero-point PAD (the PyTorch-style
PAD + VALID pair the converter folds), with every tensor quantized so that the
outputs spread over the int8 range rather than saturating.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as tfl

from tflm_train import ir
from tflm_train.kernels_grad.common import resolve_padding

ACT = tfl.ActivationFunctionType


@dataclasses.dataclass
class DepthwiseCase:
    op: ir.Op                      # the stock DEPTHWISE_CONV_2D
    x: ir.Tensor                   # the layer input (the PAD's input when there is one)
    pad_op: Optional[ir.Op]        # PAD feeding `op`, or None
    pad: tuple                     # (top, left) of pad_op
    pads: np.ndarray               # pad_op's [[0, 0], [top, bottom], [left, right], [0, 0]]

    @property
    def ops(self) -> list:
        return [self.pad_op, self.op] if self.pad_op is not None else [self.op]

    def image(self, rng) -> np.ndarray:
        return rng.integers(-128, 128, size=self.x.shape).astype(np.int8)


def _axis(rng, kernel: int, stride: int, dilation: int, padding: str, explicit: bool) -> tuple:
    """(input size, pad before, pad after) of one spatial axis; the pads are an explicit
    PAD's (each at most (kernel - 1) * dilation, as the kernel requires), else zero."""
    effective = (kernel - 1) * dilation + 1
    if not explicit:
        smallest = effective if padding == "VALID" else 1
        return int(rng.integers(smallest, smallest + 7)), 0, 0
    before, after = (int(p) for p in rng.integers(0, effective, size=2))
    size = int(rng.integers(max(1, effective - before - after), effective + 7))
    return size, before, after


def random_case(rng, *, name: str = "dw", depth_multiplier: int = 1, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding: str = "SAME", explicit_pad: bool = False, bias: bool = True,
                activation: int = ACT.NONE, channels: Optional[int] = None) -> DepthwiseCase:
    """A stock depthwise layer; explicit_pad adds a PAD with random asymmetric pads (the layer is VALID)."""
    padding = "VALID" if explicit_pad else padding
    rows = _axis(rng, kernel[0], strides[0], dilations[0], padding, explicit_pad)
    cols = _axis(rng, kernel[1], strides[1], dilations[1], padding, explicit_pad)
    c = channels or int(rng.integers(1, 7))
    out_c = c * depth_multiplier
    padded_hw = (rows[0] + rows[1] + rows[2], cols[0] + cols[1] + cols[2])
    out_hw = tuple(resolve_padding(padding, size, k, s, d)[0]
                   for size, k, s, d in zip(padded_hw, kernel, strides, dilations))

    s_x, x_zp = float(np.float32(10.0 ** rng.uniform(-2.5, -1))), int(rng.integers(-20, 21))
    s_w = (10.0 ** rng.uniform(-3, -1.5, size=out_c)).astype(np.float32)
    taps = kernel[0] * kernel[1]
    # An accumulator's spread is about sqrt(taps) * 74 * 73; aim at +-40 output steps.
    s_y = float(np.float32(s_x * float(np.median(s_w)) * 5400 * np.sqrt(taps) / 40 * 10.0 ** rng.uniform(-0.3, 0.3)))
    y_zp = int(rng.integers(-30, 31))

    x = ir.Tensor(f"{name}/x", (1, rows[0], cols[0], c), np.int8, quant=ir.Quant(s_x, x_zp))
    w = ir.Tensor(f"{name}/w", (1, *kernel, out_c), np.int8,
                  data=rng.integers(-127, 128, size=(1, *kernel, out_c)),
                  quant=ir.Quant(s_w, np.zeros(out_c), 3))
    b = None
    if bias:
        b = ir.Tensor(f"{name}/b", (out_c,), np.int32, data=rng.integers(-20000, 20000, size=out_c),
                      quant=ir.Quant(np.float32(s_x) * s_w, np.zeros(out_c)))
    y = ir.Tensor(f"{name}/y", (1, *out_hw, out_c), np.int8, quant=ir.Quant(s_y, y_zp))

    pad_op, layer_input = None, x
    pads = np.array([[0, 0], rows[1:], cols[1:], [0, 0]], np.int32)
    if explicit_pad:
        layer_input = ir.Tensor(f"{name}/padded", (1, *padded_hw, c), np.int8, quant=ir.Quant(s_x, x_zp))
        pad_op = ir.Op("PAD", [x, ir.Tensor(f"{name}/pads", (4, 2), np.int32, data=pads)], [layer_input],
                       options=tfl.PadOptionsT())
    options = tfl.DepthwiseConv2DOptionsT()
    options.padding = tfl.Padding.SAME if padding == "SAME" else tfl.Padding.VALID
    options.strideH, options.strideW = strides
    options.dilationHFactor, options.dilationWFactor = dilations
    options.depthMultiplier = depth_multiplier
    options.fusedActivationFunction = activation
    # Stock TFLM takes an absent bias as a 2-input node (an index of -1 crashes its Prepare).
    op = ir.Op("DEPTHWISE_CONV_2D", [layer_input, w] + ([b] if bias else []), [y], options=options)
    return DepthwiseCase(op, x, pad_op, (rows[1], cols[1]), pads)


# Named cases covering the contract: depth multipliers 1 and 2, strides 1/2, dilation 2,
# kernels 3/5/7, asymmetric explicit padding, SAME-equivalent padding, ReLU6, no bias.
CASES = {
    "k3_s1_same": dict(kernel=(3, 3)),
    "k3_s2_same_relu6": dict(kernel=(3, 3), strides=(2, 2), activation=ACT.RELU6),
    "k5_s2_pad_relu6": dict(kernel=(5, 5), strides=(2, 2), explicit_pad=True, activation=ACT.RELU6),
    "k7_s1_valid_m2": dict(kernel=(7, 7), padding="VALID", depth_multiplier=2),
    "k3_dilation2_same_m2": dict(kernel=(3, 3), dilations=(2, 2), depth_multiplier=2, activation=ACT.RELU),
    "k3_s2_pad_no_bias": dict(kernel=(3, 3), strides=(2, 2), explicit_pad=True, bias=False),
    "k5x3_mixed_pad_m2": dict(kernel=(5, 3), strides=(2, 1), dilations=(1, 2), explicit_pad=True,
                              depth_multiplier=2),
    "k7_s2_same_no_bias_relu6": dict(kernel=(7, 7), strides=(2, 2), bias=False, activation=ACT.RELU6),
}


def varied(y: np.ndarray) -> bool:
    """Whether an output is worth comparing: several distinct values, not a clamped constant."""
    return len(np.unique(y)) >= min(4, y.size // 3)
