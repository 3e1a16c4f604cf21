"""Fused depthwise → pointwise gradients: TFLT_DEPTHWISE_POINTWISE_GRAD.

In an inverted-residual block the backward computes the depthwise layer's input
gradient g (the expansion conv's output gradient, float32 [1, H', W', C]), then the
expansion conv's input gradient and its update from g. With the reordering, g and the
depthwise layer's own output gradient are alive together, most of the backward peak.
Where nothing else reads g, one op computes g a channel at a time and feeds each
channel straight to the conv's input gradient (a 1x1 conv's only) and update (same
bytes: see kernels_grad/depthwise_pointwise.py), so g never exists whole; the op
replaces the three where the estimated arena drops.
"""
from __future__ import annotations

import numpy as np

from tflm_train import ir
from tflm_train.converter import memory
from tflm_train.converter.schedule import written_variables
from tflm_train.kernels_grad.common import WINDOW_FIELDS, decode_options
from tflm_train.schema.training_ops_generated import (ConvGradOptions, ConvUpdateOptions,
                                                      DepthwisePointwiseGradOptions)

DEPTHWISE = "TFLT_DEPTHWISE_INPUT_GRAD"
INPUT_GRAD = "TFLT_CONV_INPUT_GRAD"
UPDATE = "TFLT_CONV_GRAD_UPDATE"
# The slot of g in each op that may read it.
G_SLOTS = {INPUT_GRAD: 1, UPDATE: 3}


def fuse_gradients(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in the reordered schedule) with each depthwise input gradient that
    only a conv's input gradient (1x1) and update read fused with them, where that lowers the
    estimated arena; the fused ops' scratch tensors are added to `graph`."""
    candidates = _candidates(ops, graph.outputs)
    tensors = graph.tensors + [fused.outputs[0] for _, fused in candidates.values()]

    def arena(chosen: dict) -> int:
        return memory.estimate(ir.Graph(_with_fused(ops, chosen), graph.inputs, graph.outputs, tensors)).arena_bytes

    # A fused op can cost more op data than it saves where g was not part of the peak: drop those
    # that do not pay, smallest g first.
    chosen = memory.drop_unpaid(candidates, arena, sorted(candidates, key=lambda k: ops[k].outputs[0].nbytes))
    for _, fused in chosen.values():
        graph.add_tensor(fused.outputs[0])
    return _with_fused(ops, chosen)


def _candidates(ops: list, graph_outputs: list) -> dict:
    """{index of a depthwise input gradient: (indices of the ops the fused op replaces, fused op)}."""
    readers = ir.readers(ops)
    outputs = {id(t) for t in graph_outputs}
    candidates = {}
    for i, op in enumerate(ops):
        if op.kind != DEPTHWISE or id(op.outputs[0]) in outputs:
            continue
        reads = readers.get(id(op.outputs[0]), [])
        by_kind = {ops[j].kind: j for j, slot in reads if G_SLOTS.get(ops[j].kind) == slot}
        if not reads or len(by_kind) != len(reads):
            continue  # something else reads g (or one kind twice)
        fused = _fused_op(op, ops[by_kind[INPUT_GRAD]] if INPUT_GRAD in by_kind else None,
                          ops[by_kind[UPDATE]] if UPDATE in by_kind else None)
        replaced = [i] + sorted(by_kind.values())
        if fused is not None and _movable(ops, replaced):
            candidates[i] = (replaced, fused)
    return candidates


def _fused_op(depthwise: ir.Op, input_grad, update):
    """The TFLT_DEPTHWISE_POINTWISE_GRAD doing what the three ops (either of the last two may be
    None) do, or None if they do not describe one conv layer it can stream."""
    label, dy, dw_y, dw_w, dw_w_scale = depthwise.inputs
    pw_y = pw_w = pw_w_scale = split_train = x = w_train = w_qas = b_train = b_qas = lr = state = pointwise = None
    if input_grad is not None:
        _, _, pw_y, pw_w, split_train, pw_w_scale = input_grad.inputs
        options = decode_options(ConvGradOptions, input_grad)
        if len(pw_w.shape) != 4 or pw_w.shape[1:3] != (1, 1):
            return None  # a k×k input gradient sums taps before channels: no channel streaming
        pointwise = ConvUpdateOptions(**{k: options[k] for k in WINDOW_FIELDS + ("act_min", "act_max")})
    if update is not None:
        if len(update.inputs) > 10:
            return None  # a weight with fractional bits: the fused op takes none
        _, lr, state, _, update_y, x, w_train, w_qas, b_train, b_qas = update.inputs
        options = ConvUpdateOptions.from_bytes(update.custom_options)
        if options.depthwise or (w_train is not None and len(w_train.shape) != 4):
            return None
        if pointwise is not None:
            agree = all(getattr(pointwise, k) == getattr(options, k) for k in WINDOW_FIELDS + ("act_min", "act_max"))
            # w_train serves both: the input gradient's trained slice (split weights) or weight.
            trained = split_train if split_train is not None else pw_w if pw_w.is_variable else None
            if not agree or update_y is not pw_y or trained is not w_train:
                return None
        pw_y, pointwise = update_y, options
    elif split_train is not None or pw_w.is_variable:
        return None  # trained weights without their update: not a graph the converter makes
    g = depthwise.outputs[0]
    scratch = ir.Tensor(f"{g.name}/channel", (g.shape[1] * g.shape[2],), np.float32)
    inputs = [label, lr, state, dy, dw_y, dw_w, dw_w_scale, pw_y, pw_w, pw_w_scale, x, w_train, w_qas, b_train,
              b_qas]
    while inputs[-1] is None:
        inputs.pop()
    options = DepthwisePointwiseGradOptions(depthwise=ConvGradOptions.from_bytes(depthwise.custom_options),
                                            pointwise=pointwise)
    outputs = [scratch] + ([input_grad.outputs[0]] if input_grad is not None else [])
    return ir.Op("TFLT_DEPTHWISE_POINTWISE_GRAD", inputs, outputs, custom=True,
                 role="update" if update is not None else "backward", custom_options=options.to_bytes())


def _movable(ops: list, replaced: list) -> bool:
    """Whether the fused op can run where the first replaced op does: every tensor the later ones
    read exists by then, and no op in between writes a variable they read or reads one they write."""
    first, moved = replaced[0], [ops[j] for j in replaced[1:]]
    producers = {id(t): j for j, op in enumerate(ops) for t in op.outputs if t is not None}
    reads = {id(t) for op in moved for t in op.inputs if t is not None}
    if any(producers.get(key, -1) >= first for key in reads - {id(ops[first].outputs[0])}):
        return False
    writes = set().union(*map(written_variables, moved))
    for j in range(first + 1, replaced[-1]):
        if j not in replaced and ({id(t) for t in ops[j].inputs if t is not None} & writes or written_variables(ops[j]) & reads):
            return False
    return True


def _with_fused(ops: list, chosen: dict) -> list:
    """`ops` with each chosen depthwise input gradient replaced by its fused op and the ops the
    fused op replaces removed."""
    gone = {j for replaced, _ in chosen.values() for j in replaced}
    return [chosen[i][1] if i in chosen else op for i, op in enumerate(ops) if i in chosen or i not in gone]
