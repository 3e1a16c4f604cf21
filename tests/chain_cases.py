"""Random chains of stock int8 conv layers (as ir ops) for the TFLT_CONV_CHAIN tests.

A chain is what the converter fuses: consecutive CONV_2D / DEPTHWISE_CONV_2D layers, each
reading the one before's output, a layer optionally behind a zero-point PAD (the PyTorch-style
PAD + VALID pair the lowering folds). Every output scale is chosen so that the outputs
spread over the int8 range instead of saturating or collapsing to the zero point.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as tfl

from depthwise_cases import varied
from tflm_train import ir
from tflm_train.converter import lowering
from tflm_train.kernels_grad.common import resolve_padding
from tflm_train.reference import Executor
from tflm_train.schema.training_ops_generated import ConvChainOptions

ACT = tfl.ActivationFunctionType
_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class Layer:
    depthwise: bool = False
    kernel: tuple = (3, 3)
    strides: tuple = (1, 1)
    dilations: tuple = (1, 1)
    padding: str = "SAME"         # SAME, VALID, or PAD: a zero-point PAD (random sides) before a VALID layer
    channels: int = 0             # a conv's output channels (0: random)
    depth_multiplier: int = 1
    activation: int = ACT.RELU6
    bias: bool = True


STEM = Layer(strides=(2, 2))
DEPTHWISE = Layer(depthwise=True)
POINTWISE = Layer(kernel=(1, 1))
PROJECT = Layer(kernel=(1, 1), activation=ACT.NONE)

# Named chains covering the contract, each with its input's (height, width, channels): MCUNet's
# first layers (3x3 stride-2 stem, a block's depthwise and projection, the next block's expansion
# and stride-2 depthwise behind a PAD), odd sizes and kernels, dilation, depth multipliers, VALID
# windows, no bias, a 1x1 stride 2, and a dilated window whose first row reads only padding.
CHAINS = {
    "mcunet_head": ([STEM, DEPTHWISE, PROJECT, POINTWISE, Layer(depthwise=True, strides=(2, 2), padding="PAD"),
                     PROJECT], (17, 13, 3)),
    "pointwise_pair": ([POINTWISE, PROJECT], (5, 7, 4)),
    "dilated_m2": ([Layer(kernel=(5, 3), padding="VALID"), Layer(depthwise=True, dilations=(2, 2), depth_multiplier=2),
                    Layer(kernel=(1, 1), strides=(2, 2), bias=False)], (11, 9, 3)),
    "odd_pads": ([Layer(depthwise=True, kernel=(5, 5), strides=(2, 1), padding="PAD", activation=ACT.RELU),
                  Layer(kernel=(3, 1), dilations=(2, 1), padding="PAD", bias=False),
                  Layer(depthwise=True, kernel=(1, 3), strides=(1, 2), padding="VALID", depth_multiplier=3)],
                 (9, 10, 2)),
    "tall_stride": ([Layer(kernel=(7, 7), strides=(2, 2)), Layer(depthwise=True, kernel=(7, 7), strides=(3, 3)),
                     DEPTHWISE], (23, 24, 2)),
    "padding_only_row": ([POINTWISE, Layer(depthwise=True, kernel=(2, 3), dilations=(3, 1)), PROJECT], (2, 6, 3)),
}


@dataclasses.dataclass
class Chain:
    x: ir.Tensor
    ops: list                  # the stock layers, each after its PAD if it has one
    convs: list                # the stock layers only

    @property
    def y(self) -> ir.Tensor:
        return self.convs[-1].outputs[0]

    def image(self, rng) -> np.ndarray:
        return rng.integers(-128, 128, size=self.x.shape).astype(np.int8)

    def graph(self) -> ir.Graph:
        tensors = {id(t): t for op in self.ops for t in op.inputs + op.outputs if t is not None}
        return ir.Graph(list(self.ops), [self.x], [self.y], list(tensors.values()))

    def lowered(self, graph: ir.Graph) -> list:
        """The layers as the converter's per-op lowering leaves them (PADs folded, wide layers lowered),
        their new constants added to `graph`."""
        return lowering.lower_convs(graph, list(self.ops))

    def chain_op(self, graph: ir.Graph) -> ir.Op:
        return lowering.conv_chain_op(graph, self.lowered(graph))


def chain_parameters(op: ir.Op) -> tuple:
    """(stages, per stage (w, bias or None, multiplier, shift) as arrays) of a TFLT_CONV_CHAIN op."""
    arrays = [t if t is None else t.data for t in op.inputs[1:]]
    return ConvChainOptions.from_bytes(op.custom_options).stages, [arrays[i:i + 4] for i in range(0, len(arrays), 4)]


def random_layers(rng, count: int, height: int, width: int) -> list:
    """`count` random layers whose windows fit the image they get (SAME where VALID would not)."""
    layers, size = [], np.array([height, width])
    for _ in range(count):
        kernel = tuple(int(k) for k in rng.choice([1, 3, 5], size=2))
        layer = Layer(depthwise=bool(rng.random() < 0.5), kernel=kernel,
                      strides=tuple(int(s) for s in rng.integers(1, 3, size=2)),
                      dilations=(int(rng.integers(1, 3)), 1) if kernel[0] > 1 else (1, 1),
                      padding=str(rng.choice(["SAME", "VALID", "PAD"])), depth_multiplier=int(rng.integers(1, 3)),
                      activation=int(rng.choice([ACT.NONE, ACT.RELU, ACT.RELU6])), bias=bool(rng.random() < 0.8))
        effective = (np.array(layer.kernel) - 1) * np.array(layer.dilations) + 1
        if layer.padding != "SAME" and (size < effective + 1).any():
            layer = dataclasses.replace(layer, padding="SAME")
        padding = "SAME" if layer.padding == "SAME" else "VALID"
        size = np.array([resolve_padding(padding, int(n), int(e), s, 1)[0]
                         for n, e, s in zip(size, effective, layer.strides)])
        layers.append(layer)
    return layers


def random_chain(rng, layers: list, height: int, width: int, channels: int, name: str = "chain") -> Chain:
    s_x, zp = float(np.float32(10.0 ** rng.uniform(-2.5, -1))), int(rng.integers(-20, 21))
    x = ir.Tensor(f"{name}/x", (1, height, width, channels), np.int8, quant=ir.Quant(s_x, zp))
    chain = Chain(x, [], [])
    current, value = x, chain.image(rng)  # each layer's scale is fitted to its input on this image
    for i, layer in enumerate(layers):
        spread = max(float(np.std(value.astype(np.float64) - int(current.quant.zero_point[0]))), 1.0)
        for _ in range(_ATTEMPTS):  # weights whose outputs on the image vary (clamps flatten some draws)
            layer_ops = _layer(rng, layer, current, spread, f"{name}/{i}")
            output = Executor(ir.Graph(layer_ops, [current], [layer_ops[-1].outputs[0]], [])).invoke([value])[0]
            if varied(output):
                break
        value = output
        chain.ops += layer_ops
        chain.convs.append(layer_ops[-1])
        current = layer_ops[-1].outputs[0]
    return chain


def _layer(rng, layer: Layer, x: ir.Tensor, spread: float, name: str) -> list:
    """[PAD,] the stock layer reading x, whose values spread by `spread` around the zero point."""
    ops = []
    if layer.padding == "PAD":
        effective = [(k - 1) * d + 1 for k, d in zip(layer.kernel, layer.dilations)]
        pads = np.array([[0, 0], *(rng.integers(0, e, size=2) for e in effective), [0, 0]], np.int32)
        padded = ir.Tensor(f"{name}/padded", (1, *(np.array(x.shape[1:3]) + pads[1:3].sum(axis=1)), x.shape[3]),
                           np.int8, quant=x.quant)
        ops.append(ir.Op("PAD", [x, ir.Tensor(f"{name}/pads", (4, 2), np.int32, data=pads)], [padded],
                         options=tfl.PadOptionsT()))
        x = padded
    padding = "SAME" if layer.padding == "SAME" else "VALID"
    out_hw = [resolve_padding(padding, size, k, s, d)[0]
              for size, k, s, d in zip(x.shape[1:3], layer.kernel, layer.strides, layer.dilations)]
    in_c = x.shape[3]
    if layer.depthwise:
        out_c = in_c * layer.depth_multiplier
        w_shape, axis, taps = (1, *layer.kernel, out_c), 3, layer.kernel[0] * layer.kernel[1]
    else:
        out_c = layer.channels or int(rng.integers(2, 9))
        w_shape, axis, taps = (out_c, *layer.kernel, in_c), 0, layer.kernel[0] * layer.kernel[1] * in_c
    s_x = float(x.quant.scale[0])
    s_w = (10.0 ** rng.uniform(-3, -1.5, size=out_c)).astype(np.float32)
    # An accumulator's spread is about sqrt(taps) * spread * 73: aim at +-40 output steps, and at
    # biases that shift it without swamping it.
    accumulator = spread * 73 * np.sqrt(taps)
    s_y = float(np.float32(s_x * float(np.median(s_w)) * accumulator / 40 * 10.0 ** rng.uniform(-0.3, 0.3)))
    w = ir.Tensor(f"{name}/w", w_shape, np.int8, data=rng.integers(-127, 128, size=w_shape),
                  quant=ir.Quant(s_w, np.zeros(out_c), axis))
    b = ir.Tensor(f"{name}/b", (out_c,), np.int32, data=rng.integers(-accumulator, accumulator, size=out_c),
                  quant=ir.Quant(np.float32(s_x) * s_w, np.zeros(out_c))) if layer.bias else None
    y = ir.Tensor(f"{name}/y", (1, *out_hw, out_c), np.int8, quant=ir.Quant(s_y, int(rng.integers(-30, 31))))
    if layer.depthwise:
        options = tfl.DepthwiseConv2DOptionsT()
        options.depthMultiplier = layer.depth_multiplier
    else:
        options = tfl.Conv2DOptionsT()
    options.padding = tfl.Padding.SAME if padding == "SAME" else tfl.Padding.VALID
    options.strideH, options.strideW = layer.strides
    options.dilationHFactor, options.dilationWFactor = layer.dilations
    options.fusedActivationFunction = layer.activation
    kind = "DEPTHWISE_CONV_2D" if layer.depthwise else "CONV_2D"
    return ops + [ir.Op(kind, [x, w, b], [y], options=options)]
