"""Arena estimate: tensor lifetimes, TFLM's greedy placement, and the per-op live-memory timeline.

TFLM plans every non-constant, non-variable tensor by its lifetime (producing op to
last consuming op; graph inputs from op 0, graph outputs to the last op) and places
them largest-first at the lowest offset that does not overlap a simultaneously live
buffer. Variables (trainable weights, training state) live in the persistent tail.
"""
from __future__ import annotations

import dataclasses

from tflm_train import ir

ALIGNMENT = 16

# Per-interpreter bookkeeping in the persistent tail, measured on the pinned
# tflite-micro wheel (x86-64): one TfLiteEvalTensor per tensor, one
# NodeAndRegistration per op, and op data (per-channel multipliers and shifts
# for quantized conv-like ops).
EVAL_TENSOR_BYTES = 24
NODE_BYTES = 64
OP_DATA_BYTES = 128
PER_CHANNEL_OP_DATA_BYTES = 8
PER_CHANNEL_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TFLT_CONV_2D_SPLIT")


def align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclasses.dataclass
class Lifetime:
    tensor: ir.Tensor
    first: int
    last: int
    size: int


@dataclasses.dataclass
class MemoryEstimate:
    arena_bytes: int            # head (planned activations/gradients) + tail (persistent)
    planned_bytes: int
    variable_bytes: int
    overhead_bytes: int
    timeline: list              # per op: bytes of planned tensors live during it
    lower_bound_bytes: int      # max over ops of simultaneously live planned bytes


def lifetimes(graph: ir.Graph) -> list:
    """Arena tensors in tensor order with [first, last] op indices, as TFLM's allocation info builds them."""
    last_op = max(len(graph.ops) - 1, 0)
    first: dict = {id(t): 0 for t in graph.inputs}
    last: dict = {id(t): last_op for t in graph.outputs}
    for i, op in enumerate(graph.ops):
        for t in op.outputs:
            if t is not None:
                first.setdefault(id(t), i)
        for t in op.inputs:
            if t is not None:
                last[id(t)] = max(last.get(id(t), i), i)
    out = []
    for t in graph.referenced_tensors():
        if t.is_variable or t.data is not None or id(t) not in first:
            continue
        out.append(Lifetime(t, first[id(t)], max(last.get(id(t), first[id(t)]), first[id(t)]), align(t.nbytes)))
    return out


def greedy_offsets(buffers: list) -> tuple:
    """TFLM's greedy planner: largest first (later-added first among equals), first gap that fits."""
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, -i))
    placed: list = []           # (offset, lifetime), kept sorted by offset
    offsets = [0] * len(buffers)
    for i in order:
        b = buffers[i]
        candidate = 0
        for offset, other in placed:
            if other.last < b.first or other.first > b.last:
                continue
            if offset - candidate >= b.size:
                break
            candidate = max(candidate, offset + other.size)
        offsets[i] = candidate
        placed.append((candidate, b))
        placed.sort(key=lambda e: e[0])
    total = max((offsets[i] + b.size for i, b in enumerate(buffers)), default=0)
    return offsets, total


def estimate(graph: ir.Graph) -> MemoryEstimate:
    buffers = lifetimes(graph)
    _, planned = greedy_offsets(buffers)
    timeline = [sum(b.size for b in buffers if b.first <= i <= b.last) for i in range(len(graph.ops))]
    variables = sum(align(t.nbytes) for t in graph.referenced_tensors() if t.is_variable)
    overhead = (EVAL_TENSOR_BYTES * len(graph.referenced_tensors()) + NODE_BYTES * len(graph.ops)
                + sum(OP_DATA_BYTES + PER_CHANNEL_OP_DATA_BYTES * op.outputs[0].shape[-1]
                      if op.kind in PER_CHANNEL_KINDS else 0 for op in graph.ops))
    return MemoryEstimate(planned + variables + overhead, planned, variables, overhead, timeline,
                          max(timeline, default=0))
