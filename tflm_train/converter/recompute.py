"""Rematerialisation: the backward recomputes saved activations instead of keeping them.

With reordering, most of the backward's peak is forward activations the backward
still reads (the input x of a layer whose weights train, outputs the activation masks
could not replace), each alive from its producer early in the forward to its last
backward reader late in the backward. Where it lowers the estimated arena, copies of
the forward ops producing such an activation run again right before its first
backward reader, from tensors alive there anyway (or from a checkpoint whose life is
extended instead), and the backward reads the copy: the original dies in the forward.

The copies compute the same bytes as the originals: forward ops are pure functions of
their inputs, every activation is written once, and a copy may read a parameter only
if no update before it has written that parameter. They cost compute (the late, small
layers mostly) and a node each.
"""
from __future__ import annotations

import dataclasses

from tflm_train import ir
from tflm_train.converter import memory
from tflm_train.converter.schedule import written_variables

# Forward ops recomputed for one saved activation at most: an inverted-residual block
# (pointwise, depthwise, pointwise, residual ADD) back to its input.
MAX_RECOMPUTED_OPS = 4


class _Unsafe(Exception):
    """A copy would read a parameter an update has already written."""


def recompute_saved_activations(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in order) with saved activations recomputed in the backward wherever
    that lowers the estimated arena; the copies' tensors are added to `graph`."""
    added: list = []

    def arena(candidate: list, tensors: list) -> int:
        trial = ir.Graph(candidate, graph.inputs, graph.outputs, graph.tensors + tensors)
        return memory.estimate(trial).arena_bytes

    best = arena(ops, added)
    for saved in _saved_activations(ops, graph.outputs):
        choice = None
        for budget in range(1, MAX_RECOMPUTED_OPS + 1):
            trial = _rematerialised(ops, saved, budget)
            if trial is None:
                continue
            cost = arena(trial[0], added + trial[1])
            if cost < best:
                best, choice = cost, trial
        if choice is not None:
            ops, added = choice[0], added + choice[1]
    for tensor in added:
        graph.add_tensor(tensor)
    return ops


def _saved_activations(ops: list, outputs: list) -> list:
    """Activations forward ops write and later ops read, most bytes × ops alive first."""
    readers = ir.readers(ops)
    graph_outputs = {id(t) for t in outputs}
    found = []
    for i, op in enumerate(ops):
        if op.role != "forward":
            continue
        for t in op.outputs:
            reads = readers.get(id(t), [])
            if t is None or id(t) in graph_outputs or not any(ops[j].role != "forward" for j, _ in reads):
                continue
            found.append((t.nbytes * (reads[-1][0] - i), t))
    return [t for _, t in sorted(found, key=lambda pair: -pair[0])]


def _rematerialised(ops: list, saved: ir.Tensor, budget: int):
    """(ops, new tensors) with at most `budget` forward ops recomputing `saved` before its first
    backward reader, or None if that is impossible (or unsafe)."""
    readers = ir.readers(ops)
    reads = readers.get(id(saved), [])
    later = [i for i, _ in reads if ops[i].role != "forward"]
    if not later:
        return None
    at = later[0]
    producer_index = {id(t): i for i, op in enumerate(ops) for t in op.outputs if t is not None}
    written = {key for op in ops[:at] for key in written_variables(op)}
    copies: dict = {}
    recomputed: list = []
    started = [0]           # ops entered so far (a copy is appended after its inputs' copies)

    def alive_at_insertion(t: ir.Tensor) -> bool:
        return producer_index.get(id(t), -1) < at <= max((i for i, _ in readers.get(id(t), [])), default=-1)

    def value(t, forced: bool = False):
        """The tensor the copies read for `t` at the insertion point."""
        if t is None or t.is_constant:
            return t
        if t.is_variable:
            if id(t) in written:
                raise _Unsafe
            return t
        if id(t) in copies:
            return copies[id(t)]
        producer = producer_index.get(id(t))
        if not forced and (alive_at_insertion(t) or producer is None or started[0] >= budget
                           or not _recomputable(ops[producer])):
            return t        # alive anyway, or a checkpoint whose life this extends
        started[0] += 1
        op = ops[producer]
        inputs = [value(x) for x in op.inputs]
        outputs = [_copy(o) for o in op.outputs]
        copies.update((id(o), c) for o, c in zip(op.outputs, outputs))
        recomputed.append(dataclasses.replace(op, inputs=inputs, outputs=outputs, role="backward"))
        return copies[id(t)]

    if id(saved) not in producer_index or not _recomputable(ops[producer_index[id(saved)]]):
        return None
    try:
        value(saved, forced=True)
    except _Unsafe:
        return None
    rewired = [dataclasses.replace(op, inputs=[copies.get(id(t), t) if t is not None else None for t in op.inputs])
               for op in ops[at:]]
    new_tensors = [c for op in recomputed for c in op.outputs]
    return ops[:at] + recomputed + rewired, new_tensors


def _recomputable(op: ir.Op) -> bool:
    return op.role == "forward" and not op.intermediates


def _copy(t: ir.Tensor) -> ir.Tensor:
    return ir.Tensor(f"{t.name}/recomputed", t.shape, t.dtype, quant=t.quant, shape_signature=t.shape_signature)
