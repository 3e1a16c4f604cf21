"""Saved activations as bit masks: TFLT_ACTIVATION_MASK.

A backward op reads a layer's int8 output y only for its activation mask
(act_min < y < act_max), yet that keeps every such output in the arena from the
forward to the backward: most of the backward peak. Where the backward reads an
output in no other way, a TFLT_ACTIVATION_MASK right after its producer packs the
mask into N/8 bytes, the backward ops read that instead (bit-identical gradients),
and the int8 output dies after its last forward reader.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train import ir
from tflm_train.converter import memory
from tflm_train.kernels_grad.common import decode_options, packed_mask_bytes
from tflm_train.schema.training_ops_generated import OPTIONS_BY_OP, ActivationMaskOptions

# The input slot of `y` in each op that masks its incoming gradient with it.
MASK_SLOTS = {"TFLT_CONV_INPUT_GRAD": 2, "TFLT_DEPTHWISE_INPUT_GRAD": 2, "TFLT_CONV_WEIGHT_GRAD": 2,
              "TFLT_BIAS_GRAD": 2, "TFLT_CONV_GRAD_UPDATE": 4}


def pack_masks(graph: ir.Graph, ops: list) -> list:
    """`ops` (the whole step, in order) with the int8 outputs that backward ops read only as their
    mask packed right after their producers, where that lowers the estimated arena."""
    candidates = _candidates(graph, ops)
    tensors = graph.tensors + [mask.outputs[0] for mask in candidates.values()]

    def arena(masks: dict) -> int:
        return memory.estimate(ir.Graph(_with_masks(ops, masks), graph.inputs, graph.outputs, tensors)).arena_bytes

    # A mask op costs its node, op data and output tensor for the whole run but saves only where
    # its activation was part of the peak (often the forward's is higher): drop those that do not
    # pay, smallest activation first.
    chosen = memory.drop_unpaid(candidates, arena, sorted(candidates, key=lambda k: candidates[k].inputs[0].size))
    for mask in chosen.values():
        graph.add_tensor(mask.outputs[0])
    return _with_masks(ops, chosen)


def _candidates(graph: ir.Graph, ops: list) -> dict:
    """{id(y): its TFLT_ACTIVATION_MASK} for each int8 output, not a graph output, that some backward
    ops read as their mask, all with the same bounds, and nothing but forward ops reads otherwise
    (a weight gradient's `x` needs the values)."""
    readers = ir.readers(ops)
    outputs = {id(t) for t in graph.outputs}
    candidates = {}
    for op in ops:
        for y in op.outputs:
            bounds = _mask_bounds([(ops[i], slot) for i, slot in readers.get(id(y), [])])
            if bounds is None or y.dtype != np.int8 or id(y) in outputs:
                continue
            act_min, act_max = bounds
            packed = ir.Tensor(f"{y.name}/mask", (packed_mask_bytes(y.size),), np.uint8)
            candidates[id(y)] = ir.Op("TFLT_ACTIVATION_MASK", [y], [packed], custom=True, role="forward",
                                      custom_options=ActivationMaskOptions(act_min=act_min,
                                                                           act_max=act_max).to_bytes())
    return candidates


def _mask_bounds(readers: list):
    """(act_min, act_max) if some readers are backward ops reading the tensor as their mask, with those
    bounds, and the others forward ops; else None."""
    bounds = set()
    for op, slot in readers:
        if MASK_SLOTS.get(op.kind) == slot:
            options = decode_options(OPTIONS_BY_OP[op.kind], op)
            bounds.add((options["act_min"], options["act_max"]))
        elif op.role != "forward":
            return None
    return bounds.pop() if len(bounds) == 1 else None


def _with_masks(ops: list, masks: dict) -> list:
    """`ops` with each mask op right after its activation's producer and copies of the backward ops
    reading the packed mask instead of the activation."""
    result = []
    for op in ops:
        slot = MASK_SLOTS.get(op.kind)
        if slot is not None and op.inputs[slot] is not None and id(op.inputs[slot]) in masks:
            inputs = list(op.inputs)
            inputs[slot] = masks[id(inputs[slot])].outputs[0]
            op = dataclasses.replace(op, inputs=inputs)
        result.append(op)
        result += [masks[id(t)] for t in op.outputs if id(t) in masks]
    return result
