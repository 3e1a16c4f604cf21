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

Then runs of frozen conv layers (no trainable parameter, each intermediate output
read only by the next layer) become one TFLT_CONV_CHAIN, which streams rows through
a small scratch so those intermediates never exist whole: at 128x128, the early
layers of MCUNet and MobileNetV2 materialise 128-192 KB activations otherwise.
"""
from __future__ import annotations

import numpy as np

from tflm_train import ir
from tflm_train.converter import depthwise, layers, memory
from tflm_train.kernels_grad.common import decode_options
from tflm_train.kernels_grad.conv_chain import scratch_bytes
from tflm_train.schema.training_ops_generated import (ConvChainOptions, ConvChainStage, DepthwiseConvOptions,
                                                      SplitConvOptions)

LOWERED_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D")
FLASH_KINDS = ("TFLT_CONV_2D_SPLIT", "TFLT_DEPTHWISE_CONV_2D")


def lower_forward(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in order) with convs lowered, foldable PADs removed and chains of frozen convs
    fused."""
    return fuse_conv_chains(graph, lower_convs(graph, ops))


def lower_convs(graph: ir.Graph, ops: list) -> list:
    """`ops` with every frozen-parameter conv lowered where that saves memory and foldable PADs removed."""
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


def fuse_conv_chains(graph: ir.Graph, ops: list) -> list:
    """`ops` with runs of frozen convs fused into TFLT_CONV_CHAIN ops where that lowers the forward's peak."""
    staging = ir.Graph([], [], [], [])  # the candidates' new tensors, until a candidate is kept
    chains = {}
    for run in _frozen_runs(graph, ops):
        chain = conv_chain_op(staging, run)
        if _intermediate_bytes(run) > chain.outputs[1].nbytes:
            chains[id(run[0])] = (run, chain)
    # A chain changes only what is live during the forward, so it is judged by the forward's own planned
    # peak (inference's): what the backward keeps of the forward, the later passes shrink (masks,
    # recomputation), but not below that. It costs speed (our portable kernels instead of TFLM's
    # optimized ones, the windows' row shifts): those that do not lower the peak are dropped, those
    # with the least to save first.
    forward = [op for op in ops if op.role == "forward"]
    def forward_peak(kept: dict) -> int:
        # staging grows as cuts are tried: each trial sees the scratch of the chains it holds
        trial = ir.Graph(_with_chains(forward, kept), graph.inputs, graph.outputs, graph.tensors + staging.tensors)
        return memory.estimate(trial).planned_bytes

    kept, best = chains, forward_peak(chains)
    for key in sorted(chains, key=lambda k: _intermediate_bytes(chains[k][0])):
        trial = {k: chain for k, chain in kept.items() if k != key}
        peak = forward_peak(trial)
        if peak <= best:
            kept, best = trial, peak
    # A chain holds its input (which its output may be written over: memory.in_place_offsets) beside all
    # its windows: a cut at a narrow activation lets the first part's windows sit beside the input and
    # the second's beside that activation. Each cut is kept only where the peak drops, the best first.
    pending = list(kept)
    while pending:
        run, _ = kept[pending.pop()]
        cuts = []
        for k in range(2, len(run) - 1):
            trial = {**kept, id(run[0]): (run[:k], conv_chain_op(staging, run[:k])),
                     id(run[k]): (run[k:], conv_chain_op(staging, run[k:]))}
            cuts.append((forward_peak(trial), k, trial))
        peak, k, trial = min(cuts, key=lambda c: c[:2], default=(best, 0, None))
        if peak < best:
            kept, best = trial, peak
            pending += [id(run[0]), id(run[k])]
    used = {id(t) for _, chain in kept.values() for t in chain.inputs + chain.outputs}
    graph.tensors += [t for t in staging.tensors if id(t) in used]
    return _with_chains(ops, kept)


def conv_chain_op(graph: ir.Graph, convs: list) -> ir.Op:
    """The TFLT_CONV_CHAIN computing what `convs` compute, each reading the one before's output: frozen
    TFLT_CONV_2D_SPLIT / TFLT_DEPTHWISE_CONV_2D ops or stock convs (whose flash constants go to `graph`)."""
    flash = [op if op.kind in FLASH_KINDS else _lowered(graph, op, op.inputs[0], (0, 0)) for op in convs]
    stages, inputs = [], [flash[0].inputs[0]]
    for op in flash:
        depthwise = op.kind == "TFLT_DEPTHWISE_CONV_2D"
        _, height, width, channels = op.outputs[0].shape
        stages.append(ConvChainStage(depthwise=depthwise, output_height=height, output_width=width,
                                     output_channels=channels,
                                     **decode_options(DepthwiseConvOptions if depthwise else SplitConvOptions, op)))
        inputs += [op.inputs[1], *op.inputs[-3:]]  # w, bias, multiplier, shift
    y = flash[-1].outputs[0]
    scratch = graph.add_tensor(ir.Tensor(f"{y.name}/chain_scratch",
                                         (scratch_bytes(stages, [op.inputs[1].shape[1] for op in flash]),), np.int8))
    return ir.Op("TFLT_CONV_CHAIN", inputs, [y, scratch], custom=True, role=convs[0].role,
                 custom_options=ConvChainOptions(stages=stages).to_bytes())


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


def _frozen_runs(graph: ir.Graph, ops: list) -> list:
    """Runs of two or more consecutive frozen convs, each but the last read only by the next."""
    readers = ir.readers(ops)
    outputs = {id(t) for t in graph.outputs}
    runs, run = [], []
    for i, op in enumerate(ops):
        if not _frozen_conv(op):
            runs, run = runs + [run], []
            continue
        last = run[-1].outputs[0] if run else None
        if last is not None and op.inputs[0] is last and readers[id(last)] == [(i, 0)] and id(last) not in outputs:
            run.append(op)
        else:
            runs, run = runs + [run], [op]
    return [run for run in runs + [run] if len(run) >= 2]


def _intermediate_bytes(run: list) -> int:
    return sum(op.outputs[0].nbytes for op in run[:-1])


def _frozen_conv(op: ir.Op) -> bool:
    """A forward conv whose parameters are all flash constants (no trainable part)."""
    return (op.role == "forward" and op.kind in LOWERED_KINDS + FLASH_KINDS and len(op.inputs[1].shape) == 4
            and all(t is None or t.is_constant for t in op.inputs[1:]))


def _with_chains(ops: list, chains: dict) -> list:
    """`ops` with each run of `chains` ({id(its first op): (run, chain op)}) replaced by its chain op."""
    fused = {id(op) for run, _ in chains.values() for op in run}
    return [chains[id(op)][1] if id(op) in chains else op for op in ops if id(op) in chains or id(op) not in fused]


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
