"""Fused gradients through an inverted-residual block: TFLT_DEPTHWISE_POINTWISE_GRAD.

In an inverted-residual block (1×1 expansion conv → depthwise → 1×1 projection conv) the
backward computes the depthwise layer's output gradient (the projection's input gradient,
float32 [1, Ho, Wo, C*M]), then its input gradient g (the expansion conv's output gradient,
[1, H', W', C]), then the expansion conv's input gradient and its update from g. With the
reordering these expansion-wide float gradients are most of the backward peak. Where nothing
else reads g, one op computes g a channel at a time and feeds each channel straight to the
conv's input gradient (a 1×1 conv's only) and update, so g never exists whole; where nothing
but the depthwise layer's own update reads the depthwise output gradient either, the op starts
from the projection's output gradient and computes that one a channel group at a time too
(same bytes: see kernels_grad/depthwise_pointwise.py). The op replaces the ops it fuses where
the estimated arena drops.
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
FUSED = "TFLT_DEPTHWISE_POINTWISE_GRAD"
# The slot of g in each op that may read it.
G_SLOTS = {INPUT_GRAD: 1, UPDATE: 3}


def fuse_gradients(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in the reordered schedule) with each depthwise input gradient that
    only a conv's input gradient (1x1) and update read fused with them, and with the projection's
    input gradient and the depthwise update before it where possible, where that lowers the
    estimated arena; the fused ops' scratch tensors are added to `graph`."""
    blocks, parts = _candidates(ops, graph.outputs)
    tensors = graph.tensors + [fused.outputs[0] for level in (blocks, parts) for _, fused in level.values()]

    def arena(chosen: dict) -> int:
        return memory.estimate(ir.Graph(_with_fused(ops, chosen), graph.inputs, graph.outputs, tensors)).arena_bytes

    # A fused op can cost more op data than it saves where its gradients were not part of the peak:
    # drop those that do not pay, smallest gradient first; a block that does not pay may still pay
    # as the depthwise → pointwise part alone.
    chosen: dict = {}
    for level in (_compatible(blocks, parts), parts):
        taken = {j for replaced, _ in chosen.values() for j in replaced}
        new = sorted((k for k in level if k not in chosen and taken.isdisjoint(level[k][0])),
                     key=lambda k: ops[k].outputs[0].nbytes)
        chosen = memory.drop_unpaid({**chosen, **{k: level[k] for k in new}}, arena, new)
    for _, fused in chosen.values():
        graph.add_tensor(fused.outputs[0])
    return _with_fused(ops, chosen)


def _compatible(blocks: dict, parts: dict) -> dict:
    """The blocks that share no op with another depthwise layer's part. Without expansion layers
    (MobileNetV1: depthwise, 1×1, depthwise, ...) a 1×1 layer's input gradient is one block's
    projection and the next layer's pointwise part, and fused ops may not share an op: there the
    parts are fused (the last depthwise layer's block shares nothing)."""
    def shares(k):
        return any(not set(blocks[k][0]).isdisjoint(replaced) for j, (replaced, _) in parts.items() if j != k)
    return {k: block for k, block in blocks.items() if not shares(k)}


def _candidates(ops: list, graph_outputs: list) -> tuple:
    """(blocks, depthwise → pointwise parts): each {index of a depthwise input gradient: (indices of
    the ops the fused op replaces, the first one being where it runs; fused op)}."""
    readers = ir.readers(ops)
    producers = {id(t): j for j, op in enumerate(ops) for t in op.outputs if t is not None}
    outputs = {id(t) for t in graph_outputs}
    blocks, parts = {}, {}
    for i, op in enumerate(ops):
        if op.kind != DEPTHWISE or id(op.outputs[0]) in outputs:
            continue
        reads = readers.get(id(op.outputs[0]), [])
        by_kind = {ops[j].kind: j for j, slot in reads if G_SLOTS.get(ops[j].kind) == slot}
        if not reads or len(by_kind) != len(reads):
            continue  # something else reads g (or one kind twice)
        input_grad = ops[by_kind[INPUT_GRAD]] if INPUT_GRAD in by_kind else None
        update = ops[by_kind[UPDATE]] if UPDATE in by_kind else None
        fused = _fused_op(op, input_grad, update)
        replaced = [i] + sorted(by_kind.values())
        if fused is None or not _movable(ops, replaced):
            continue
        parts[i] = (replaced, fused)
        block = _block(ops, readers, producers, outputs, i)
        if block is not None:
            projection, depthwise_update = block
            fused = _fused_op(op, input_grad, update, ops[projection],
                              None if depthwise_update is None else ops[depthwise_update])
            replaced = sorted(replaced + [j for j in block if j is not None])
            if fused is not None and _movable(ops, replaced):
                blocks[i] = (replaced, fused)
    return blocks, parts


def _block(ops: list, readers: dict, producers: dict, outputs: set, i: int):
    """(index of the projection's input gradient, of the depthwise layer's update or None) if the
    depthwise output gradient that the depthwise input gradient `ops[i]` reads comes from a conv's
    input gradient and nothing but those two ops reads it, else None."""
    dy = ops[i].inputs[1]
    projection = producers.get(id(dy))
    if projection is None or ops[projection].kind != INPUT_GRAD or id(dy) in outputs:
        return None
    others = [(j, slot) for j, slot in readers.get(id(dy), []) if j != i]
    if not others:
        return projection, None
    if len(others) > 1 or ops[others[0][0]].kind != UPDATE or others[0][1] != G_SLOTS[UPDATE]:
        return None
    return projection, others[0][0]


def _fused_op(depthwise: ir.Op, input_grad, update, projection=None, depthwise_update=None):
    """The TFLT_DEPTHWISE_POINTWISE_GRAD doing what the ops (all but the depthwise input gradient
    may be None) do, or None if they do not describe layers it can stream."""
    label, dy, dw_y, dw_w, dw_w_scale = depthwise.inputs
    pw_y = pw_w = pw_w_scale = split_train = x = w_train = w_qas = b_train = b_qas = lr = state = pointwise = None
    if input_grad is not None:
        _, _, pw_y, pw_w, split_train, pw_w_scale = input_grad.inputs
        options = decode_options(ConvGradOptions, input_grad)
        if len(pw_w.shape) != 4 or pw_w.shape[1:3] != (1, 1):
            return None  # a k×k input gradient sums taps before channels: no channel streaming
        pointwise = ConvUpdateOptions(**{k: options[k] for k in WINDOW_FIELDS + ("act_min", "act_max")})
    if update is not None:
        if _has_fraction(update):
            return None
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
    inputs = [label, lr, state, dy, dw_y, dw_w, dw_w_scale, pw_y, pw_w, pw_w_scale, x, w_train, w_qas, b_train,
              b_qas]
    options = DepthwisePointwiseGradOptions(depthwise=ConvGradOptions.from_bytes(depthwise.custom_options),
                                            pointwise=pointwise)
    g = depthwise.outputs[0]
    scratch = g.shape[1] * g.shape[2]
    if projection is not None:
        block = _block_inputs(depthwise, projection, depthwise_update, lr, state)
        if block is None:
            return None
        (lr, state), block_inputs, options.projection, update_options = block
        if update_options is not None:
            options.depthwise_update = update_options
        inputs[1:4] = [lr, state, projection.inputs[1]]
        inputs += block_inputs
        scratch += dy.shape[1] * dy.shape[2] * options.depthwise.depth_multiplier
    while inputs[-1] is None:
        inputs.pop()
    outputs = [ir.Tensor(f"{g.name}/channel", (scratch,), np.float32)]
    outputs += [input_grad.outputs[0]] if input_grad is not None else []
    updates = update is not None or depthwise_update is not None
    return ir.Op(FUSED, inputs, outputs, custom=True, role="update" if updates else "backward",
                 custom_options=options.to_bytes())


def _block_inputs(depthwise: ir.Op, projection: ir.Op, update, lr, state):
    """((lr, state), the block inputs proj_y … dw_b_qas, the projection's options, the depthwise
    update's or None) of a fused op that starts from the projection's output gradient, or None."""
    _, _, proj_y, proj_w, proj_w_train, proj_w_scale = projection.inputs
    block = [proj_y, proj_w, proj_w_train, proj_w_scale]
    if update is None:
        return (lr, state), block, ConvGradOptions.from_bytes(projection.custom_options), None
    if _has_fraction(update):
        return None
    _, update_lr, update_state, _, y, x, w_train, w_qas, b_train, b_qas = update.inputs
    options = ConvUpdateOptions.from_bytes(update.custom_options)
    grad = ConvGradOptions.from_bytes(depthwise.custom_options)
    same = all(getattr(options, k) == getattr(grad, k) for k in WINDOW_FIELDS + (
        "act_min", "act_max", "depth_multiplier"))
    if not options.depthwise or not same or y is not depthwise.inputs[2] or lr not in (None, update_lr) \
            or state not in (None, update_state):
        return None
    return ((update_lr, update_state), block + [x, w_train, w_qas, b_train, b_qas],
            ConvGradOptions.from_bytes(projection.custom_options), options)


def _has_fraction(update: ir.Op) -> bool:
    """Whether a TFLT_CONV_GRAD_UPDATE carries its weight's fractional bits (its 11th input), which
    the fused op does not take."""
    return len(update.inputs) > 10


def _movable(ops: list, replaced: list) -> bool:
    """Whether the fused op can run where the first replaced op does: every tensor the later ones
    read exists by then, and no op in between writes a variable they read or reads one they write."""
    first, moved = replaced[0], [ops[j] for j in replaced[1:]]
    producers = {id(t): j for j, op in enumerate(ops) for t in op.outputs if t is not None}
    made = {id(t) for j in replaced for t in ops[j].outputs if t is not None}
    reads = {id(t) for op in moved for t in op.inputs if t is not None}
    if any(producers.get(key, -1) >= first for key in reads - made):
        return False
    writes = set().union(*map(written_variables, moved))
    for j in range(first + 1, replaced[-1]):
        if j not in replaced and ({id(t) for t in ops[j].inputs if t is not None} & writes or written_variables(ops[j]) & reads):
            return False
    return True


def _with_fused(ops: list, chosen: dict) -> list:
    """`ops` with the first op each chosen fused op replaces replaced by it, and the others removed."""
    at = {replaced[0]: fused for replaced, fused in chosen.values()}
    gone = {j for replaced, _ in chosen.values() for j in replaced}
    return [at[i] if i in at else op for i, op in enumerate(ops) if i in at or i not in gone]
