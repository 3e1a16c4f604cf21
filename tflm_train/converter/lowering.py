"""Forward lowering: stock conv layers become our flash-parameter kernels.

TFLM's CONV_2D computes each layer's per-channel requantisation (multiplier, shift)
at Prepare into the persistent arena: 8 bytes per output channel, ~25 KB on MCUNet,
for every frozen layer. TFLT_CONV_2D_SPLIT computes the same output bit for bit but
reads those arrays from flash constants, and its explicit window padding absorbs a
PAD in front of it (the PAD + VALID conv that PyTorch's symmetric padding imports
as), so the padded copy of the activation never exists. Stock kernels stay where
lowering would not save memory: narrow layers (the flash kernel's own op data and
two more tensors outweigh 8 bytes per channel), fully connected layers, and a PAD
something else still reads (a weight gradient needing the padded input).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train import ir
from tflm_train.converter import layers, memory
from tflm_train.schema.training_ops_generated import SplitConvOptions

LOWERED_KINDS = ("CONV_2D",)


def lower_forward(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in order) with every frozen-parameter conv lowered and foldable PADs removed."""
    readers: dict = {}
    for op in ops:
        for t in op.inputs:
            if t is not None:
                readers[id(t)] = readers.get(id(t), 0) + 1
    producers = {id(t): op for op in ops for t in op.outputs if t is not None}
    outputs = {id(t) for t in graph.outputs}
    folded, lowered = set(), {}
    for op in ops:
        if op.kind not in LOWERED_KINDS:
            continue
        pad_op = producers.get(id(op.inputs[0]))
        leading = (0, 0)
        if pad_op is not None and _foldable_pad(pad_op) and readers[id(op.inputs[0])] == 1 \
                and id(op.inputs[0]) not in outputs:
            folded.add(id(pad_op))
            leading = tuple(int(p) for p in np.asarray(pad_op.inputs[1].data)[1:3, 0])
        elif not _saves_bookkeeping(op):
            continue
        source = pad_op.inputs[0] if id(pad_op) in folded else op.inputs[0]
        lowered[id(op)] = split_conv_op(graph, op, source, op.inputs[1], None, _bias(op), leading)
    return [lowered.get(id(op), op) for op in ops if id(op) not in folded]


def split_conv_op(graph: ir.Graph, op: ir.Op, x: ir.Tensor, w: ir.Tensor, w_train, bias, leading_pad=(0, 0)) -> ir.Op:
    """The TFLT_CONV_2D_SPLIT computing `op`'s output from `x`, which lacks `leading_pad` (top, left)
    of the input `op` reads; the missing trailing padding needs no parameter (the output shape fixes it)."""
    y = op.outputs[0]
    geo = layers.geometry(op)
    window = dataclasses.replace(geo.window, pad_top=geo.window.pad_top + leading_pad[0],
                                 pad_left=geo.window.pad_left + leading_pad[1])
    _, act_min, act_max = layers.activation_bounds(op)
    multiplier, shift = layers.requantization(graph, op)
    options = SplitConvOptions(**dataclasses.asdict(window), x_zero_point=int(x.quant.zero_point[0]),
                               y_zero_point=int(y.quant.zero_point[0]), act_min=act_min, act_max=act_max)
    return ir.Op("TFLT_CONV_2D_SPLIT", [x, w, w_train, bias, multiplier, shift], [y], custom=True,
                 custom_options=options.to_bytes(), role=op.role)


def _saves_bookkeeping(op: ir.Op) -> bool:
    """The flash-parameter kernel has a larger op data and two more tensors: a gain only for wide layers."""
    lowered = memory.OP_DATA_BYTES["TFLT_CONV_2D_SPLIT"] + 2 * memory.EVAL_TENSOR_BYTES
    return memory.op_data_bytes(op) > lowered


def _bias(op: ir.Op):
    return op.inputs[2] if len(op.inputs) > 2 else None


def _foldable_pad(op: ir.Op) -> bool:
    """A spatial PAD with the zero point as pad value: padded positions then contribute nothing to a conv."""
    if op.kind != "PAD" or len(op.inputs) != 2 or op.inputs[1].data is None:
        return False
    x, y = op.inputs[0], op.outputs[0]
    paddings = np.asarray(op.inputs[1].data)
    return (x.dtype == np.int8 and len(x.shape) == 4 and paddings.shape == (4, 2) and not paddings[0].any()
            and not paddings[3].any() and (paddings >= 0).all() and x.quant is not None and y.quant is not None
            and x.quant.zero_point[0] == y.quant.zero_point[0] and x.quant.scale[0] == y.quant.scale[0])
