"""Generates the test firmware's training case: one training step of a tiny int8
CNN, computed by the numpy reference (tflm_train.kernels_grad), as a C++ header.

    python tools/gen_firmware_case.py OUT_HEADER [--seed N]

The model (batch 1, NHWC):
    x0 [8,8,3] -> CONV_2D 3x3/2 SAME + ReLU, weight split (K=2 of 3 input channels) -> y1 [4,4,8]
       -> DEPTHWISE_CONV_2D 3x3/1 SAME + ReLU6 -> y2 [4,4,8] -> MEAN(H,W) -> p [8]
       -> FULLY_CONNECTED -> logits [4] -> softmax cross-entropy
Its training step is the sequence of training ops the converter emits for it:
TRAIN_INIT, the split CONV_2D forward, SOFTMAX_XENT, the FC's input gradient
and fused update, MEAN_GRAD, the depthwise input gradient, then (off the model's
path) TFLT_DEPTHWISE_POINTWISE_GRAD as if layer 1 were a 1x1 stride-2 conv
(weight w1p, split like w1, output mask y1: an inverted-residual block's
expansion), the same op in block mode (from the gradient of a 1x1 projection
after the depthwise layer, with the depthwise update on copies of its
parameters), the depthwise layer's conventional (weight grad, bias grad, SGD
update) schedule, then the first conv's input gradient and fused update. The
builtin forward ops (depthwise, mean, FC) run in
TFLM, not in the training ops, so their outputs y2, p and logits are inputs of
the case (y2 drawn at random, some outputs clamped: not layer 2's forward of y1).

Right after the split CONV_2D, three forward ops the converter emits for other
models, off the model's path: TFLT_DEPTHWISE_CONV_2D (layer 2's forward of y1
as the converter lowers a DEPTHWISE_CONV_2D), TFLT_ACTIVATION_MASK (y2's ReLU6
mask, packed), and TFLT_CONV_CHAIN on its own image
    xc [11,10,3] -> CONV_2D 3x3/2 SAME + ReLU6 [6,5,4] -> DEPTHWISE_CONV_2D
       3x3/1 SAME x2 + ReLU6 [6,5,8] -> CONV_2D 1x1 [6,5,5]
(MCUNet's stem, a block's depthwise layer and its projection), once into its
own buffer and once in place: y written over xc as far on as the chain allows,
which for this geometry is before xc's start, y overlapping xc.

The firmware (micro/tests/firmware/main.cc) runs the same ops through
micro/core and compares every result with the arrays here bit for bit (the
loss, which may use any libm logf, within a tolerance).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tflm_train.kernels_grad.common import F32, resolve_padding, table_fields  # noqa: E402
from tflm_train.kernels_grad.conv import bias_grad, conv2d_split, conv_grad_update, conv_input_grad, \
    conv_weight_grad  # noqa: E402
from tflm_train.kernels_grad.conv_chain import conv_chain, in_place_offset, scratch_bytes  # noqa: E402
from tflm_train.kernels_grad.depthwise_conv import depthwise_conv2d, depthwise_input_grad  # noqa: E402
from tflm_train.kernels_grad.depthwise_pointwise import Block, depthwise_pointwise_grad  # noqa: E402
from tflm_train.kernels_grad.mask import pack_activation_mask  # noqa: E402
from tflm_train.kernels_grad.mean import mean_grad  # noqa: E402
from tflm_train.kernels_grad.softmax_xent import softmax_xent  # noqa: E402
from tflm_train.kernels_grad.train_init import train_init  # noqa: E402
from tflm_train.kernels_grad.update import sgd_update  # noqa: E402
from tflm_train.reference.quantization import quantize_multiplier  # noqa: E402
from tflm_train.schema.training_ops_generated import ConvChainStage, ConvGradOptions, ConvUpdateOptions, \
    Rounding  # noqa: E402

H = W = 8          # input image
C0, C1, CLASSES = 3, 8, 4
CP = 3             # output channels of the block-mode case's projection
K = 2              # trained input channels of the split first conv
LABEL = 2
LR = F32(0.1)
# Parameter ids of the stochastic-rounding hash, as the converter numbers parameters.
W1_ID, B1_ID, W2_ID, B2_ID, W3_ID, B3_ID = range(6)

# A TFLT_CONV_CHAIN layer: `width` is a conv's output channels or a depthwise layer's depth
# multiplier; SAME padding, square kernel and stride.
ChainLayer = collections.namedtuple("ChainLayer", "depthwise kernel stride width relu6")
# Like tests/chain_cases.py's STEM, DEPTHWISE (here with depth multiplier 2), PROJECT.
CHAIN_LAYERS = (ChainLayer(False, 3, 2, 4, True), ChainLayer(True, 3, 1, 2, True),
                ChainLayer(False, 1, 1, 5, False))
CHAIN_IMAGE = (11, 10, 3)  # H, W, C: odd and unequal sides, so the stem pads rows and columns differently

_C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int32): "int32_t",
            np.dtype(np.float32): "float"}


def _literal(value, dtype) -> str:
    if dtype == np.float32:
        return float(value).hex() + "f"  # exact: every float32 is a C++17 hex-float literal
    return str(int(value))


class Header:
    """Collects C++ declarations of the case."""

    def __init__(self):
        self.lines = []

    def array(self, name: str, values, mutable: bool = False) -> None:
        values = np.asarray(values)
        c_type = _C_TYPES[values.dtype]
        body = ", ".join(_literal(v, values.dtype) for v in values.reshape(-1))
        qualifier = "" if mutable else "const "
        self.lines.append(f"{qualifier}{c_type} {name}[{values.size}] = {{{body}}};")

    def arrays(self, name: str, values: list) -> None:
        """Arrays name0, name1, ... and `name`, the table of pointers to them."""
        for i, value in enumerate(values):
            self.array(f"{name}{i}", value)
        c_type = _C_TYPES[np.asarray(values[0]).dtype]
        names = ", ".join(f"{name}{i}" for i in range(len(values)))
        self.lines.append(f"const {c_type}* const {name}[{len(values)}] = {{{names}}};")

    def table(self, name: str, rows: list) -> None:
        """constexpr int name[rows][columns]."""
        body = ", ".join("{" + ", ".join(str(int(v)) for v in row) + "}" for row in rows)
        self.lines.append(f"constexpr int {name}[{len(rows)}][{len(rows[0])}] = {{{body}}};")

    def scalar(self, name: str, value) -> None:
        value = np.asarray(value)
        self.lines.append(f"constexpr {_C_TYPES[value.dtype]} {name} = {_literal(value, value.dtype)};")

    def geometry(self, name: str, in_hw, out_hw, kernel, stride, pad) -> None:
        """int[12] as micro/tests/firmware/main.cc reads it."""
        values = [*in_hw, *out_hw, kernel, kernel, stride, stride, 1, 1, pad, pad]
        self.lines.append(f"constexpr int {name}[12] = {{{', '.join(map(str, values))}}};")

    def text(self) -> str:
        return ("// generated by tools/gen_firmware_case.py; do not edit\n#pragma once\n#include <cstdint>\n\n"
                "namespace fw_case {\n" + "\n".join(self.lines) + "\n}  // namespace fw_case\n")


def _int8(rng, shape, low=-127, high=127):
    return rng.integers(low, high + 1, size=shape).astype(np.int8)


def _scales(rng, n, low, high):
    return rng.uniform(low, high, size=n).astype(F32)


def _require_change(name: str, before, after) -> None:
    if np.array_equal(before, after):
        raise SystemExit(f"the case does not change {name}: pick another seed or learning rate")


def _require_varied(name: str, y) -> None:
    """A forward output worth comparing: not clamped to a few values."""
    if len(np.unique(y)) < min(8, y.size // 3):
        raise SystemExit(f"the case's {name} is nearly constant: pick another seed or other scales")


def _requantization(x_scale, w_scale, y_scale) -> tuple:
    """Per output channel (multiplier, shift) int32 arrays of a layer's x_scale * w_scale / y_scale."""
    pairs = [quantize_multiplier(float(x_scale) * float(s) / float(y_scale)) for s in w_scale]
    multiplier, shift = zip(*pairs)
    return np.array(multiplier, np.int32), np.array(shift, np.int32)


def _chain_stage(rng, layer: ChainLayer, x, x_scale, x_zero_point) -> tuple:
    """(ConvChainStage, (w, bias, multiplier, shift), y's scale) of `layer` reading int8 x; y's scale
    spreads the layer's outputs on x about +-40 steps around its zero point (as tests/chain_cases.py
    does), so that they vary instead of all saturating."""
    _, height, width, channels = x.shape
    out_h, pad_top = resolve_padding("SAME", height, layer.kernel, layer.stride, 1)
    out_w, pad_left = resolve_padding("SAME", width, layer.kernel, layer.stride, 1)
    taps = layer.kernel * layer.kernel
    if layer.depthwise:
        out_c = channels * layer.width
        w = _int8(rng, (1, layer.kernel, layer.kernel, out_c))
    else:
        out_c, taps = layer.width, taps * channels
        w = _int8(rng, (out_c, layer.kernel, layer.kernel, channels))
    w_scale = _scales(rng, out_c, 0.005, 0.02)
    spread = max(float(np.std(x.astype(np.float64) - x_zero_point)), 1.0)
    accumulator = int(spread * 73 * np.sqrt(taps))
    y_scale = F32(float(x_scale) * float(np.median(w_scale)) * accumulator / 40)
    y_zero_point = int(rng.integers(-30, 31))
    act_min, act_max = (y_zero_point, min(127, y_zero_point + round(6 / float(y_scale)))) if layer.relu6 \
        else (-128, 127)
    stage = ConvChainStage(depthwise=layer.depthwise, stride_h=layer.stride, stride_w=layer.stride,
                           pad_top=pad_top, pad_left=pad_left, x_zero_point=x_zero_point,
                           y_zero_point=y_zero_point, act_min=act_min, act_max=act_max,
                           depth_multiplier=layer.width if layer.depthwise else 1, output_height=out_h,
                           output_width=out_w, output_channels=out_c)
    bias = rng.integers(-accumulator, accumulator, size=out_c).astype(np.int32)
    return stage, (w, bias, *_requantization(x_scale, w_scale, y_scale)), y_scale


def _stage_rows(x_shape, stages: list, kernels: list) -> tuple:
    """Per stage its geometry (int[12] as micro/tests/firmware/main.cc reads it) and its int[8]
    depthwise, in_channels, out_channels, depth_multiplier, x_zero_point, y_zero_point, act_min,
    act_max."""
    geometries, others = [], []
    _, height, width, channels = x_shape
    for stage, kernel in zip(stages, kernels):
        geometries.append([height, width, stage.output_height, stage.output_width, kernel, kernel, stage.stride_h,
                           stage.stride_w, stage.dilation_h, stage.dilation_w, stage.pad_top, stage.pad_left])
        others.append([stage.depthwise, channels, stage.output_channels, stage.depth_multiplier,
                       stage.x_zero_point, stage.y_zero_point, stage.act_min, stage.act_max])
        height, width, channels = stage.output_height, stage.output_width, stage.output_channels
    return geometries, others


def _in_place_layout(offset: int, x_size: int, y_size: int) -> tuple:
    """(x's start, y's start, bytes) of one buffer holding x and y, y starting `offset` bytes after x
    (before it if negative), as far on as x's end (tests/test_micro_core.py lays it out alike)."""
    offset = min(offset, x_size)
    x_at, y_at = max(0, -offset), max(0, offset)
    return x_at, y_at, max(x_at + x_size, y_at + y_size)


def add_conv_chain(out: Header, seed: int) -> None:
    """TFLT_CONV_CHAIN's case: its image, stages and parameters, scratch size, in-place layout and y."""
    rng = np.random.default_rng(seed + 2000)
    x = _int8(rng, (1, *CHAIN_IMAGE))
    value, scale, zero_point = x, F32(0.02), -5
    stages, parameters = [], []
    for layer in CHAIN_LAYERS:
        stage, stage_parameters, scale = _chain_stage(rng, layer, value, scale, zero_point)
        value, zero_point = conv_chain(value, [stage_parameters], [stage]), stage.y_zero_point
        stages.append(stage)
        parameters.append(stage_parameters)
    y = conv_chain(x, parameters, stages)
    _require_varied("chain y", y)
    offset = in_place_offset(stages, x.shape)
    if not -y.size < offset < x.size:
        raise SystemExit(f"in place, y at {offset} bytes from x does not overlap it: pick another chain geometry")
    kernels = [layer.kernel for layer in CHAIN_LAYERS]
    geometries, others = _stage_rows(x.shape, stages, kernels)
    out.array("chain_x", x)
    for name, arrays in zip(("chain_w", "chain_bias", "chain_multiplier", "chain_shift"), zip(*parameters)):
        out.arrays(name, arrays)
    out.table("kChainGeometry", geometries)
    out.table("kChainStages", others)
    out.scalar("kChainScratchBytes", np.int32(scratch_bytes(stages, kernels)))
    out.scalar("kChainInPlaceOffset", np.int32(offset))
    layout = _in_place_layout(offset, x.size, y.size)
    for name, value in zip(("kChainXAt", "kChainYAt", "kChainSharedBytes"), layout):
        out.scalar(name, np.int32(value))
    out.array("expected_chain_y", y)


def build_case(seed: int) -> Header:
    rng = np.random.default_rng(seed)
    out = Header()
    out.scalar("kLabel", np.int32(LABEL))
    out.scalar("kLr", LR)

    # --- layer 1: split CONV_2D 3x3 stride 2 SAME + ReLU
    x0_zp, x0_scale, y1_zp, y1_scale = -5, F32(0.02), -20, F32(0.05)
    out1, pad1 = resolve_padding("SAME", H, 3, 2, 1)
    win1 = dict(stride_h=2, stride_w=2, pad_top=pad1, pad_left=pad1)
    x0 = _int8(rng, (1, H, W, C0))
    w1 = _int8(rng, (C1, 3, 3, C0))
    w1_scale = _scales(rng, C1, 0.004, 0.01)
    b1 = rng.integers(-2000, 2000, size=C1).astype(np.int32)
    multiplier, shift = _requantization(x0_scale, w1_scale, y1_scale)
    w1_qas, b1_qas = (F32(1) / w1_scale).astype(F32), (F32(1) / (w1_scale * x0_scale)).astype(F32)

    # --- layer 2: DEPTHWISE 3x3 stride 1 SAME + ReLU6 (forward by the builtin)
    y2_zp, y2_act_max, y2_scale = -30, 90, F32(0.05)  # 6.0 at act_max
    pad2 = resolve_padding("SAME", out1, 3, 1, 1)[1]
    win2 = dict(pad_top=pad2, pad_left=pad2)
    y2 = _int8(rng, (1, out1, out1, C1), y2_zp, y2_act_max)
    y2.flat[::9] = y2_zp            # clamped outputs: the mask stops their gradient
    w2 = _int8(rng, (1, 3, 3, C1))
    w2_scale = _scales(rng, C1, 0.005, 0.02)
    b2 = rng.integers(-500, 500, size=C1).astype(np.int32)
    w2_qas, b2_qas = (F32(1) / w2_scale).astype(F32), (F32(1) / (w2_scale * y1_scale)).astype(F32)

    # --- MEAN then FULLY_CONNECTED (forward by the builtins)
    p_zp, p_scale = 3, F32(0.03)
    logits_zp, logits_scale = -10, F32(0.1)
    p = _int8(rng, (1, C1))
    w3 = _int8(rng, (CLASSES, C1))
    w3_scale = _scales(rng, CLASSES, 0.005, 0.02)
    b3 = rng.integers(-500, 500, size=CLASSES).astype(np.int32)
    w3_qas, b3_qas = (F32(1) / w3_scale).astype(F32), (F32(1) / (w3_scale * p_scale)).astype(F32)
    logits = _int8(rng, (1, CLASSES))

    out.scalar("kX0ZeroPoint", np.int32(x0_zp)); out.scalar("kX0Scale", x0_scale)
    out.scalar("kY1ZeroPoint", np.int32(y1_zp)); out.scalar("kY1Scale", y1_scale)
    out.scalar("kY2ZeroPoint", np.int32(y2_zp))
    out.scalar("kY2ActMin", np.int32(y2_zp)); out.scalar("kY2ActMax", np.int32(y2_act_max))
    out.scalar("kPZeroPoint", np.int32(p_zp)); out.scalar("kPScale", p_scale)
    out.scalar("kLogitsZeroPoint", np.int32(logits_zp)); out.scalar("kLogitsScale", logits_scale)
    out.scalar("kTrainChannels", np.int32(K))
    out.geometry("kConv1Geometry", (H, W), (out1, out1), 3, 2, pad1)
    out.geometry("kDepthwiseGeometry", (out1, out1), (out1, out1), 3, 1, pad2)
    for name, value in [("x0", x0), ("w1", w1), ("w1_scale", w1_scale), ("b1", b1), ("multiplier1", multiplier),
                        ("shift1", shift), ("w1_qas", w1_qas), ("b1_qas", b1_qas), ("y2", y2),
                        ("w2_scale", w2_scale), ("w2_qas", w2_qas), ("b2_qas", b2_qas), ("p", p),
                        ("w3_scale", w3_scale), ("w3_qas", w3_qas), ("b3_qas", b3_qas), ("logits", logits)]:
        out.array(name, value)
    # Variables the step updates in place: initial values in RAM.
    out.array("w2", w2, mutable=True)
    out.array("b2", b2, mutable=True)
    out.array("w3", w3, mutable=True)
    out.array("b3", b3, mutable=True)

    # --- the training step, op by op, in the converter's order
    state = np.zeros(2, np.int32)
    w1_train = np.zeros((C1, 3, 3, K), np.int8)
    b1_train = np.zeros(C1, np.int32)
    train_init(LABEL, state, [(w1, w1_train), (b1, b1_train)])
    out.array("expected_state", state)
    out.array("expected_w1_train_init", w1_train)
    out.array("expected_b1_train_init", b1_train)
    step = int(state[1])

    y1 = conv2d_split(x0, w1, w1_train, b1_train, multiplier, shift, output_height=out1, output_width=out1,
                      x_zero_point=x0_zp, y_zero_point=y1_zp, act_min=y1_zp, act_max=127, **win1)
    out.array("expected_y1", y1)

    act2 = dict(act_min=y2_zp, act_max=y2_act_max)
    multiplier2, shift2 = _requantization(y1_scale, w2_scale, y2_scale)
    y2_forward = depthwise_conv2d(y1, w2, b2, multiplier2, shift2, output_height=out1, output_width=out1,
                                  x_zero_point=y1_zp, y_zero_point=y2_zp, **act2, **win2)
    _require_varied("y2_forward", y2_forward)
    out.array("multiplier2", multiplier2); out.array("shift2", shift2)
    out.array("expected_y2_forward", y2_forward)
    out.array("expected_y2_mask", pack_activation_mask(y2, **act2))
    add_conv_chain(out, seed)

    loss, dlogits = softmax_xent(logits, LABEL, logits_scale=logits_scale, logits_zero_point=logits_zp)
    out.scalar("kExpectedLoss", F32(loss))
    out.array("expected_dlogits", dlogits)

    dp = conv_input_grad(dlogits, None, w3, None, w3_scale, input_height=1, input_width=1, input_channels=C1)
    out.array("expected_dp", dp)
    w3_new, b3_new = w3.copy(), b3.copy()
    conv_grad_update(LR, step, dlogits, None, p, w3_new, w3_qas, b3_new, b3_qas, x_zero_point=p_zp,
                     x_scale=p_scale, rounding=Rounding.STOCHASTIC, weight_param_id=W3_ID, bias_param_id=B3_ID)
    _require_change("w3", w3, w3_new); _require_change("b3", b3, b3_new)
    out.array("expected_w3", w3_new); out.array("expected_b3", b3_new)

    dy2 = mean_grad(dp, input_height=out1, input_width=out1)
    out.array("expected_dy2", dy2)
    dy1 = depthwise_input_grad(dy2, y2, w2, w2_scale, input_height=out1, input_width=out1, input_channels=C1,
                               **act2, **win2)
    out.array("expected_dy1", dy1)

    act1 = dict(act_min=y1_zp, act_max=127)
    w1p = _int8(rng, (C1, 1, 1, C0))
    w1p_train, b1p_train = _int8(rng, (C1, 1, 1, K)), rng.integers(-2000, 2000, size=C1).astype(np.int32)
    out.array("w1p", w1p)
    out.array("w1p_train", w1p_train, mutable=True); out.array("b1p_train", b1p_train, mutable=True)
    out.geometry("kPointwiseGeometry", (H, W), (out1, out1), 1, 2, 0)
    w1p_before, b1p_before = w1p_train.copy(), b1p_train.copy()
    dx0p, g = depthwise_pointwise_grad(
        LR, step, dy2, y2, w2, w2_scale, y1, w1p, w1_scale, x0, w1p_train, w1_qas, b1p_train, b1_qas,
        depthwise=table_fields(ConvGradOptions(input_height=out1, input_width=out1, input_channels=C1, **act2,
                                               **win2)),
        pointwise=table_fields(ConvUpdateOptions(stride_h=2, stride_w=2, x_zero_point=x0_zp, x_scale=x0_scale,
                                                 rounding=Rounding.STOCHASTIC, weight_param_id=W1_ID,
                                                 bias_param_id=B1_ID, **act1)),
        input_shape=(1, H, W, C0))
    _require_change("w1p_train", w1p_before, w1p_train); _require_change("b1p_train", b1p_before, b1p_train)
    out.array("expected_dx0p", dx0p); out.array("expected_g", g)
    out.array("expected_w1p_train", w1p_train); out.array("expected_b1p_train", b1p_train)

    # Block mode (also off the model's path): a 1x1 projection conv after the depthwise layer, whose
    # output gradient dyp starts the op, into the same expansion's dx and the depthwise layer's
    # update (on copies w2b, b2b of its weight and bias).
    block_rng = np.random.default_rng(seed + 1000)
    wp, wp_scale = _int8(block_rng, (CP, 1, 1, C1)), _scales(block_rng, CP, 0.005, 0.02)
    dyp = (block_rng.standard_normal((1, out1, out1, CP)) * 0.5).astype(F32)
    w2b, b2b = w2.copy(), b2.copy()
    out.array("wp", wp); out.array("wp_scale", wp_scale); out.array("dyp", dyp)
    out.array("w2b", w2b, mutable=True); out.array("b2b", b2b, mutable=True)
    out.geometry("kProjectionGeometry", (out1, out1), (out1, out1), 1, 1, 0)
    block = Block(None, wp, None, wp_scale,
                  table_fields(ConvGradOptions(input_height=out1, input_width=out1, input_channels=C1)), y1, w2b,
                  w2_qas, b2b, b2_qas,
                  table_fields(ConvUpdateOptions(x_zero_point=y1_zp, x_scale=y1_scale, depthwise=True,
                                                 weight_param_id=W2_ID, bias_param_id=B2_ID, **act2, **win2)))
    dx0b, gb = depthwise_pointwise_grad(
        LR, step, dyp, y2, w2b, w2_scale, y1, w1p, w1_scale, None, None, None, None, None,
        depthwise=table_fields(ConvGradOptions(input_height=out1, input_width=out1, input_channels=C1, **act2,
                                               **win2)),
        pointwise=table_fields(ConvUpdateOptions(stride_h=2, stride_w=2, **act1)), input_shape=(1, H, W, C0),
        block=block)
    _require_change("w2b", w2, w2b); _require_change("b2b", b2, b2b)
    out.array("expected_dx0b", dx0b); out.array("expected_gb", gb)
    out.array("expected_w2b", w2b); out.array("expected_b2b", b2b)

    dw2 = conv_weight_grad(dy2, y2, y1, weight_shape=w2.shape, x_zero_point=y1_zp, x_scale=y1_scale,
                           depthwise=True, **act2, **win2)
    db2 = bias_grad(dy2, y2, **act2)
    out.array("expected_dw2", dw2); out.array("expected_db2", db2)
    w2_new, b2_new = w2.copy(), b2.copy()
    sgd_update(dw2, w2_new, w2_qas, LR, step, rounding=Rounding.NEAREST, param_id=W2_ID, channel_axis=3)
    sgd_update(db2, b2_new, b2_qas, LR, step, rounding=Rounding.NEAREST, param_id=B2_ID, channel_axis=0)
    _require_change("w2", w2, w2_new); _require_change("b2", b2, b2_new)
    out.array("expected_w2", w2_new); out.array("expected_b2", b2_new)

    dx0 = conv_input_grad(dy1, y1, w1, w1_train, w1_scale, input_height=H, input_width=W, input_channels=C0,
                          **act1, **win1)
    out.array("expected_dx0", dx0)
    w1_before = w1_train.copy()
    conv_grad_update(LR, step, dy1, y1, x0, w1_train, w1_qas, b1_train, b1_qas, x_zero_point=x0_zp,
                     x_scale=x0_scale, rounding=Rounding.STOCHASTIC, weight_param_id=W1_ID, bias_param_id=B1_ID,
                     **act1, **win1)
    _require_change("w1_train", w1_before, w1_train)
    out.array("expected_w1_train", w1_train); out.array("expected_b1_train", b1_train)
    out.scalar("kW1Id", np.int32(W1_ID)); out.scalar("kB1Id", np.int32(B1_ID))
    out.scalar("kW2Id", np.int32(W2_ID)); out.scalar("kB2Id", np.int32(B2_ID))
    out.scalar("kW3Id", np.int32(W3_ID)); out.scalar("kB3Id", np.int32(B3_ID))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="header to write (in the build directory)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build_case(args.seed).text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
