"""Compile-time reverse-mode autodiff over the forward graph, pruned to what the scheme needs.

Gradient rules are registered per forward op kind (like JAX's transpose rules) in
tflm_train/kernels_grad/, next to the numpy reference of the ops they emit. A rule receives the gradient of the op's output and
returns gradients for the inputs the pass asks for; parameter updates are not
emitted by rules but requested, so the schedule pass decides whether they are
fused right after the gradient (reordered) or materialised and applied at the end.

Pruning is built in: a tensor gets a gradient only if it lies on a path from a
trainable layer's output to the logits, so backprop stops at the earliest
trainable layer and frozen layers get no weight gradients.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from tflm_train import ir
from tflm_train.errors import UserError

GRADIENT_RULES: dict = {}


def gradient_rule(*kinds: str) -> Callable:
    def register(fn):
        for kind in kinds:
            GRADIENT_RULES[kind] = fn
        return fn
    return register


@dataclasses.dataclass(eq=False)
class UpdateRequest:
    """A trainable layer's parameters want their gradients from `dy` (the layer's output gradient)."""
    layer: ir.Op
    dy: ir.Tensor


@dataclasses.dataclass(eq=False)
class TrainingIO:
    label: ir.Tensor
    learning_rate: ir.Tensor
    state: ir.Tensor
    loss: ir.Tensor = None


class GradContext:
    """What a gradient rule may use: the graph, the pruning predicate, and op emission."""

    def __init__(self, graph: ir.Graph, io: TrainingIO, params: dict, needed: set):
        self.graph = graph
        self.io = io
        self.params = params
        self._needed = needed
        self.emitted: list = []          # backward ops and UpdateRequests, in execution order

    def needs_grad(self, tensor) -> bool:
        return tensor is not None and id(tensor) in self._needed

    def params_of(self, op: ir.Op):
        return self.params.get(id(op))

    def float_like(self, tensor: ir.Tensor, suffix: str = "grad") -> ir.Tensor:
        return self.graph.add_tensor(ir.Tensor(f"{tensor.name}/{suffix}", tensor.shape, np.float32))

    def const(self, name: str, values) -> ir.Tensor:
        values = np.asarray(values)
        return self.graph.add_tensor(ir.Tensor(name, values.shape, values.dtype, values))

    def emit_custom(self, kind: str, inputs: list, outputs: list, options, role: str = "backward") -> ir.Op:
        op = ir.Op(kind, inputs, outputs, custom_options=options.to_bytes(), custom=True, role=role)
        self.emitted.append(op)
        return op

    def emit_builtin(self, kind: str, inputs: list, outputs: list, options=None) -> ir.Op:
        op = ir.Op(kind, inputs, outputs, options, role="backward")
        self.emitted.append(op)
        return op

    def request_update(self, layer: ir.Op, dy: ir.Tensor) -> None:
        self.emitted.append(UpdateRequest(layer, dy))


def tensors_needing_grad(graph: ir.Graph, trainable_layers: list, logits: ir.Tensor) -> set:
    """Tensors downstream of a trainable layer's output and upstream of the logits."""
    downstream = {id(t) for op in trainable_layers for t in op.outputs}
    for op in graph.ops:
        if any(t is not None and id(t) in downstream for t in op.inputs):
            downstream.update(id(t) for t in op.outputs)
    upstream = {id(logits)}
    for op in reversed(graph.ops):
        if any(id(t) in upstream for t in op.outputs):
            upstream.update(id(t) for t in op.inputs if t is not None)
    return downstream & upstream


def differentiate(graph: ir.Graph, ctx: GradContext, logits: ir.Tensor, dlogits: ir.Tensor) -> list:
    """Emits the backward pass from d(loss)/d(logits); returns ctx.emitted."""
    import tflm_train.kernels_grad  # noqa: F401  (registers the gradient rules)

    pending: dict = {id(logits): [dlogits]}
    for index in range(len(graph.ops) - 1, -1, -1):
        op = graph.ops[index]
        outs = [t for t in op.outputs if id(t) in pending]
        if not outs:
            continue
        rule = GRADIENT_RULES.get(op.kind)
        if rule is None:
            raise UserError(f"no gradient rule for {op.kind} (op {index}) on the backward path")
        if len(op.outputs) != 1:
            raise UserError(f"{op.kind} (op {index}) has {len(op.outputs)} outputs; only single-output ops are differentiable")
        dy = _sum_gradients(ctx, op.outputs[0], pending.pop(id(op.outputs[0])))
        for input_index, dx in rule(ctx, op, dy, index).items():
            pending.setdefault(id(op.inputs[input_index]), []).append(dx)
    return ctx.emitted


def _sum_gradients(ctx: GradContext, tensor: ir.Tensor, grads: list) -> ir.Tensor:
    """A tensor read by several ops (a residual fork) gets the sum of their gradients, via the stock float ADD."""
    total = grads[0]
    for i, g in enumerate(grads[1:], 1):
        out = ctx.float_like(tensor, f"grad_sum{i}")
        ctx.emit_builtin("ADD", [total, g], [out], _add_options())
        total = out
    return total


def _add_options():
    from tflite_micro.tensorflow.lite.python import schema_py_generated as schema
    return schema.AddOptionsT()
