"""Arena estimate: tensor lifetimes, TFLM's greedy placement, and the per-op live-memory timeline.

TFLM plans every non-constant, non-variable tensor by its lifetime (producing op to
last consuming op; graph inputs from op 0, graph outputs to the last op) and places
them largest-first at the lowest offset that does not overlap a simultaneously live
buffer, after those the model places itself (offline-planned offsets, which may overlap:
in_place_offsets). Variables (trainable weights, training state) live in the persistent tail.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train import ir
from tflm_train.kernels_grad import conv_chain
from tflm_train.kernels_grad.common import decode_options
from tflm_train.schema.training_ops_generated import ConvChainOptions

ALIGNMENT = 16
# plan_arena's search: orders tried beyond TFLM's own, and the largest graph it searches.
PLAN_TRIALS = 200
PLAN_MAX_BUFFERS = 400

# Persistent bookkeeping in the tail, calibrated against the pinned tflite-micro
# wheel (x86-64, 64-bit pointers: a 32-bit MCU needs less) with
# `tflm-train inspect --measure`: one TfLiteEvalTensor per tensor, one
# NodeAndRegistration per op, a persistent TfLiteTensor per graph input/output
# (plus its quantization params when int8), the allocator and planner objects.
EVAL_TENSOR_BYTES = 24
NODE_BYTES = 64
IO_TENSOR_BYTES = 64
IO_QUANTIZATION_BYTES = 32
INTERPRETER_BYTES = 512
# Per op: the kernel's op data (16-byte aligned) plus TFLM's parsed builtin
# options; for ours, sizeof(OpData) of micro/kernels/*.cc rounded up to 16.
OP_DATA_BYTES = {
    "CONV_2D": 80 + 28, "DEPTHWISE_CONV_2D": 80 + 28, "FULLY_CONNECTED": 80 + 16,
    "AVERAGE_POOL_2D": 32 + 40, "SOFTMAX": 96 + 4, "RESHAPE": 36, "ADD": 64 + 8,
    "MEAN": 68, "PAD": 64, "QUANTIZE": 32, "DEQUANTIZE": 32, "SLICE": 0,
    "TFLT_TRAIN_INIT": 16, "TFLT_SOFTMAX_XENT": 16, "TFLT_CONV_2D_SPLIT": 160, "TFLT_DEPTHWISE_CONV_2D": 128,
    "TFLT_CONV_GRAD_UPDATE": 144, "TFLT_CONV_INPUT_GRAD": 144, "TFLT_DEPTHWISE_INPUT_GRAD": 112,
    "TFLT_MEAN_GRAD": 16, "TFLT_CONV_WEIGHT_GRAD": 144, "TFLT_BIAS_GRAD": 80, "TFLT_SGD_UPDATE": 32,
    "TFLT_ACTIVATION_MASK": 16, "TFLT_CONV_CHAIN": 48, "TFLT_DEPTHWISE_POINTWISE_GRAD": 288,
}
OTHER_OP_DATA_BYTES = 64      # a kind not calibrated above
# TFLT_CONV_CHAIN's second allocation: per stage a core::ConvChainStage, and a RowWindow but for the last.
CHAIN_STAGE_BYTES = 112
CHAIN_WINDOW_BYTES = 24
# TFLT_DEPTHWISE_POINTWISE_GRAD's second allocation in block mode (its input proj_w given).
FUSED_BLOCK_BYTES = 176
FUSED_BLOCK_INPUT = 16
# Per-channel-quantized weights: two arrays (multiplier, shift), an int32 per output channel in each.
PER_CHANNEL_OP_DATA_BYTES = 4
PER_CHANNEL_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclasses.dataclass
class Lifetime:
    tensor: ir.Tensor
    first: int
    last: int
    size: int
    offset: int = None          # offline-planned head offset, or None (TFLM's planner places it)


@dataclasses.dataclass
class MemoryEstimate:
    arena_bytes: int            # head (planned activations/gradients) + tail (persistent)
    planned_bytes: int
    variable_bytes: int
    overhead_bytes: int
    timeline: list              # per op: bytes the planned tensors live during it occupy


def in_place_offsets(graph: ir.Graph) -> dict:
    """{id(tensor): head offset} placing each TFLT_CONV_CHAIN's output over its input where the input dies
    there, as far on as the chain allows (kernels_grad/conv_chain.in_place_offset, rounded down to the
    arena's alignment), and only where they overlap. TFLM plans tensors apart, so such a pair needs offsets
    of the model's own; the input must be such an output or a graph input, whose place is free to choose
    (one graph input only: graph inputs all live from the start)."""
    readers = ir.readers(graph.ops)
    outputs = {id(t) for t in graph.outputs}
    relative = {id(t): None for t in graph.inputs}
    for i, op in enumerate(graph.ops):
        x, y = (op.inputs[0], op.outputs[0]) if op.kind == "TFLT_CONV_CHAIN" else (None, None)
        if x is None or id(x) not in relative or id(x) in outputs or readers[id(x)][-1][0] != i:
            continue
        distance = min(_in_place_limit(op), 0) // ALIGNMENT * ALIGNMENT
        if distance + y.nbytes > 0:
            if relative[id(x)] is None:
                relative = {key: offset for key, offset in relative.items() if offset is not None}
                relative[id(x)] = 0
            relative[id(y)] = relative[id(x)] + distance
    placed = {key: offset for key, offset in relative.items() if offset is not None}
    base = min(placed.values(), default=0)
    return {key: offset - base for key, offset in placed.items()}


def _in_place_limit(chain: ir.Op) -> int:
    """How far into its input a TFLT_CONV_CHAIN's output may start (kernels_grad/conv_chain.in_place_offset)."""
    return conv_chain.in_place_offset(decode_options(ConvChainOptions, chain)["stages"], chain.inputs[0].shape)


def plan_arena(graph: ir.Graph) -> dict:
    """{id(tensor): head offset} for every planned tensor, for the model to carry: TFLM's greedy placement
    leaves gaps (up to ~6 KB on the paper models' training steps), and it follows a plan the model gives.
    The in-place pairs stay where in_place_offsets puts them; the others are placed as TFLM would, in the
    best of TFLM's own order and PLAN_TRIALS orders by randomly weighted size (seeded: a model always
    gets the same plan). Only where that beats TFLM's order; a graph with more than PLAN_MAX_BUFFERS
    buffers (a full update, megabytes) keeps TFLM's placement."""
    buffers = lifetimes(dataclasses.replace(graph, arena_offsets=in_place_offsets(graph)))
    fixed = {id(b.tensor): b.offset for b in buffers if b.offset is not None}
    free = [i for i, b in enumerate(buffers) if b.offset is None]
    if len(buffers) > PLAN_MAX_BUFFERS:
        return fixed
    best_offsets, best = greedy_offsets(buffers)
    tflm = best
    rng = np.random.default_rng(0)
    for _ in range(PLAN_TRIALS):
        weights = rng.uniform(0.0, 2.0, len(buffers))
        order = sorted(free, key=lambda i: -buffers[i].size * weights[i])
        offsets, total = greedy_offsets(buffers, order)
        if total < best:
            best_offsets, best = offsets, total
    if best == tflm:
        return fixed
    return {id(b.tensor): offset for b, offset in zip(buffers, best_offsets)}


def arena_offsets(graph: ir.Graph) -> dict:
    """The model's own head offsets: those it carries, or for a graph not planned yet, in_place_offsets."""
    return in_place_offsets(graph) if graph.arena_offsets is None else graph.arena_offsets


def lifetimes(graph: ir.Graph) -> list:
    """Arena tensors in tensor order with [first, last] op indices and offline offsets, as TFLM's allocation
    info builds them."""
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
    offsets = arena_offsets(graph)
    out = []
    for t in graph.referenced_tensors():
        if t.is_variable or t.data is not None or id(t) not in first:
            continue
        out.append(Lifetime(t, first[id(t)], max(last.get(id(t), first[id(t)]), first[id(t)]), align(t.nbytes),
                            offsets.get(id(t))))
    return out


def greedy_offsets(buffers: list, order: list = None) -> tuple:
    """TFLM's greedy planner: offline-planned buffers where the model puts them, then the others in
    `order` (by default TFLM's: largest first, later-added first among equals), each in the first gap
    that fits."""
    offline = [i for i, b in enumerate(buffers) if b.offset is not None]
    placed = sorted(((buffers[i].offset, buffers[i]) for i in offline), key=lambda e: e[0])
    offsets = [b.offset or 0 for b in buffers]
    if order is None:
        order = sorted((i for i, b in enumerate(buffers) if b.offset is None), key=lambda i: (-buffers[i].size, -i))
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
    offsets, planned = greedy_offsets(buffers)
    timeline = [_occupied([(offsets[k], b.size) for k, b in enumerate(buffers) if b.first <= i <= b.last])
                for i in range(len(graph.ops))]
    variables = sum(align(t.nbytes) for t in graph.referenced_tensors() if t.is_variable)
    overhead = bookkeeping_bytes(graph)
    return MemoryEstimate(planned + variables + overhead, planned, variables, overhead, timeline)


def _occupied(extents: list) -> int:
    """Bytes covered by (offset, size) extents, an overlap counted once."""
    total, end = 0, 0
    for offset, size in sorted(extents):
        total += max(0, offset + size - max(offset, end))
        end = max(end, offset + size)
    return total


def drop_unpaid(candidates: dict, arena, order) -> dict:
    """`candidates` ({key: change}) without each change whose removal does not raise `arena(kept)`, tried
    in `order` (keys): a pass keeps a change only where the estimated arena drops, and TFLM's greedy
    placement makes that a property of the whole set, not of each change alone."""
    chosen, best = candidates, arena(candidates)
    for key in order:
        trial = {k: change for k, change in chosen.items() if k != key}
        cost = arena(trial)
        if cost <= best:
            chosen, best = trial, cost
    return chosen


def bookkeeping_bytes(graph: ir.Graph) -> int:
    """The interpreter's persistent tail apart from variables."""
    io = list(graph.inputs) + list(graph.outputs)
    return (INTERPRETER_BYTES + EVAL_TENSOR_BYTES * len(graph.referenced_tensors())
            + NODE_BYTES * len(graph.ops) + IO_TENSOR_BYTES * len(io)
            + IO_QUANTIZATION_BYTES * sum(t.dtype == np.int8 for t in io)
            + sum(op_data_bytes(op) for op in graph.ops))


def op_data_bytes(op: ir.Op) -> int:
    size = OP_DATA_BYTES.get(op.kind, OTHER_OP_DATA_BYTES)
    if op.kind == "TFLT_CONV_CHAIN":
        stages = (len(op.inputs) - 1) // conv_chain.STAGE_INPUTS
        size += align(CHAIN_STAGE_BYTES * stages + CHAIN_WINDOW_BYTES * (stages - 1))
    if op.kind == "TFLT_DEPTHWISE_POINTWISE_GRAD" and len(op.inputs) > FUSED_BLOCK_INPUT \
            and op.inputs[FUSED_BLOCK_INPUT] is not None:
        size += FUSED_BLOCK_BYTES
    weight = op.inputs[1] if op.kind in PER_CHANNEL_KINDS and len(op.inputs) > 1 else None
    if weight is not None and weight.quant is not None and weight.quant.per_channel:
        size += 2 * align(PER_CHANNEL_OP_DATA_BYTES * weight.quant.scale.size)
    return size


def lower_bound(graph: ir.Graph) -> int:
    """Bytes any execution of this op graph must hold at once, whatever the order and planner.

    A tensor must be resident while op i runs in *every* topological order when its
    producer precedes i and i precedes one of its consumers in the data-flow DAG (or i
    produces or reads it); graph inputs exist from the start, outputs to the end. The
    bound is the largest such set over all ops, plus the variables (resident throughout),
    with exact, unaligned sizes and no interpreter bookkeeping. Ordering constraints
    through variables (an update after the reads of its weight) are ignored, which only
    admits more orders and so keeps the bound valid. A TFLT_CONV_CHAIN may write its output
    over its input (in_place_offsets), so there the two count as the least they can occupy.
    """
    ops = graph.ops
    producer = {id(t): i for i, op in enumerate(ops) for t in op.outputs if t is not None}
    consumers = {key: {i for i, _ in reads} for key, reads in ir.readers(ops).items()}
    descendants = [0] * len(ops)          # bitsets, each op included in its own
    for i in reversed(range(len(ops))):
        mask = 1 << i
        for t in ops[i].outputs:
            for c in consumers.get(id(t), ()) if t is not None else ():
                mask |= descendants[c]
        descendants[i] = mask
    ancestors = [0] * len(ops)
    for i, op in enumerate(ops):
        mask = 1 << i
        for t in op.inputs:
            if t is not None and id(t) in producer:
                mask |= ancestors[producer[id(t)]]
        ancestors[i] = mask
    everything = (1 << len(ops)) - 1
    outputs = {id(t) for t in graph.outputs}
    live = [0] * len(ops)
    for t in graph.referenced_tensors():
        if t.is_variable or t.data is not None:
            continue
        before = descendants[producer[id(t)]] if id(t) in producer else everything
        after = everything if id(t) in outputs else 0
        for c in consumers.get(id(t), ()):
            after |= ancestors[c]
        if id(t) in producer:
            after |= 1 << producer[id(t)]
        resident = before & after
        for i in range(len(ops)):
            if resident >> i & 1:
                live[i] += t.nbytes
    for i, op in enumerate(ops):
        if op.kind == "TFLT_CONV_CHAIN" and id(op.inputs[0]) not in outputs:
            live[i] -= _in_place_saving(op)
    variables = sum(t.nbytes for t in graph.referenced_tensors() if t.is_variable)
    return variables + max(live, default=0)


def _in_place_saving(chain: ir.Op) -> int:
    """Bytes of x and y a chain's output written over its input saves at best: y placed as far on
    into x as it may go, or at x's start."""
    x, y = chain.inputs[0], chain.outputs[0]
    limit = _in_place_limit(chain)
    footprint = max(x.nbytes, y.nbytes) if limit >= 0 else max(x.nbytes - limit, y.nbytes)
    return max(0, x.nbytes + y.nbytes - footprint)
