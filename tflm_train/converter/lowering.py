"""Forward lowering: stock conv layers become our flash-parameter kernels.

TFLM's CONV_2D and DEPTHWISE_CONV_2D compute each layer's per-channel requantisation
(multiplier, shift) at Prepare into the persistent arena: 8 bytes per output channel,
~48 KB on MCUNet. TFLT_CONV_2D_SPLIT and TFLT_DEPTHWISE_CONV_2D compute the same output
bit for bit but read those arrays from flash constants, and their explicit padding absorbs a
PAD in front of it (the PAD + VALID conv that PyTorch's symmetric padding imports
as), so the padded copy of the activation never exists. Stock kernels stay where
lowering would not save memory: narrow layers (the flash kernel's own op data and
two more tensors outweigh 8 bytes per channel), fully connected layers, and a PAD
something else still reads (a weight gradient needing the padded input).
"""
from __future__ import annotations

import numpy as np

from tflm_train import ir
from tflm_train.converter import depthwise, layers, memory
from tflm_train.schema.training_ops_generated import SplitConvOptions

LOWERED_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def lower_forward(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in order) with every frozen-parameter conv lowered and foldable PADs removed."""
    readers, producers = ir.readers(ops), ir.producers(ops)
    outputs = {id(t) for t in graph.outputs}
    folded, lowered = set(), {}
    for op in ops:
        if op.kind not in LOWERED_KINDS:
            continue
        pad_op = producers.get(id(op.inputs[0]))
        leading = (0, 0)
        if pad_op is not None and _foldable_pad(pad_op) and len(readers[id(op.inputs[0])]) == 1 \
                and id(op.inputs[0]) not in outputs and _window_covers(op, _leading_pad(pad_op)):
            folded.add(id(pad_op))
            leading = _leading_pad(pad_op)
        elif not _saves_bookkeeping(op):
            continue
        source = pad_op.inputs[0] if id(pad_op) in folded else op.inputs[0]
        lowered[id(op)] = _lowered(graph, op, source, leading)
    return [lowered.get(id(op), op) for op in ops if id(op) not in folded]


def split_conv_op(graph: ir.Graph, op: ir.Op, x: ir.Tensor, w: ir.Tensor, w_train, bias, leading_pad=(0, 0)) -> ir.Op:
    """The TFLT_CONV_2D_SPLIT computing `op`'s output from `x`, which lacks `leading_pad` (top, left)
    of the input `op` reads; the missing trailing padding needs no parameter (the output shape fixes it)."""
    fields, multiplier, shift = layers.flash_requantized_fields(graph, op, x, leading_pad)
    return ir.Op("TFLT_CONV_2D_SPLIT", [x, w, w_train, bias, multiplier, shift], list(op.outputs), custom=True,
                 custom_options=SplitConvOptions(**fields).to_bytes(), role=op.role)


def _lowered(graph: ir.Graph, op: ir.Op, x: ir.Tensor, leading_pad: tuple) -> ir.Op:
    if op.kind == "DEPTHWISE_CONV_2D":
        return depthwise.explicit_depthwise_conv(graph, op, leading_pad, x)
    return split_conv_op(graph, op, x, op.inputs[1], None, _bias(op), leading_pad)


def _saves_bookkeeping(op: ir.Op) -> bool:
    """The flash-parameter kernel has a larger op data and two more tensors: a gain only for wide layers."""
    kind = "TFLT_DEPTHWISE_CONV_2D" if op.kind == "DEPTHWISE_CONV_2D" else "TFLT_CONV_2D_SPLIT"
    lowered = memory.OP_DATA_BYTES.get(kind, memory.OTHER_OP_DATA_BYTES) + 2 * memory.EVAL_TENSOR_BYTES
    return memory.op_data_bytes(op) > lowered


def _leading_pad(pad_op: ir.Op) -> tuple:
    return tuple(int(p) for p in np.asarray(pad_op.inputs[1].data)[1:3, 0])


def _window_covers(op: ir.Op, leading_pad: tuple) -> bool:
    """Our kernels' windows start inside the dilated kernel: padding wider than that stays a PAD."""
    window = layers.geometry(op).window
    kh, kw = op.inputs[1].shape[1:3]
    return (window.pad_top + leading_pad[0] <= (kh - 1) * window.dilation_h
            and window.pad_left + leading_pad[1] <= (kw - 1) * window.dilation_w)


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
