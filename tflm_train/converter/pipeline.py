"""The conversion pipeline: load → trainables → autodiff (pruned) → schedule → rewrite forward → lower →
pack activation masks → fuse depthwise → pointwise gradients → recompute saved activations → plan the
arena (conv chains in place) → emit."""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train import ir
from tflm_train.converter import fused_grads, layers, lowering, masks, memory, metadata, recompute, scheme as schemes
from tflm_train.converter.autodiff import GradContext, TrainingIO, differentiate, tensors_needing_grad
from tflm_train.converter.schedule import schedule
from tflm_train.converter.trainables import make_params
from tflm_train.errors import UserError
from tflm_train.schema.training_ops_generated import Rounding, SoftmaxXentOptions, TrainInitOptions

ROUNDING_NAMES = {"nearest": Rounding.NEAREST, "stochastic": Rounding.STOCHASTIC}
# Ops that only move or relabel the logits between the classifier layer and SOFTMAX.
LOGIT_PASSTHROUGH = ("RESHAPE", "SQUEEZE", "DEQUANTIZE", "QUANTIZE")


@dataclasses.dataclass
class ConvertOptions:
    reorder: bool = True
    rounding: str = "nearest"
    qas: bool = True
    lower_forward: bool = True     # False: TFLM's builtin forward kernels (e.g. CMSIS-NN), more arena
    activation_masks: bool = True  # False: the backward reads the int8 activations, more arena
    fuse_gradients: bool = True    # False: depthwise input gradients exist whole (reordered schedule), more arena
    recompute: bool = True         # False: saved activations are kept, never recomputed (faster, more arena)
    fractional_weights: bool = False  # True: 8 fractional bits per trainable weight (one more byte each)


def convert(graph: ir.Graph, scheme_source: dict, options: ConvertOptions = ConvertOptions()) -> ir.Graph:
    """Rewrites `graph` in place into a training graph and returns it."""
    if options.rounding not in ROUNDING_NAMES:
        raise UserError(f"unknown rounding {options.rounding!r} (nearest or stochastic)")
    _check_forward_model(graph)
    graph.arena_offsets = None  # the forward model's own plan would not fit the training graph
    logits = _find_logits(graph)
    classifier = _find_classifier(graph, logits)
    scheme = schemes.resolve(scheme_source, graph, classifier)
    scheme_json = scheme.to_json(graph)

    io = TrainingIO(label=graph.add_tensor(ir.Tensor("tflm_train/label", (1,), np.int32)),
                    learning_rate=graph.add_tensor(ir.Tensor("tflm_train/learning_rate", (1,), np.float32)),
                    state=graph.add_tensor(ir.Tensor("tflm_train/state", (2,), np.int32, is_variable=True)),
                    loss=graph.add_tensor(ir.Tensor("tflm_train/loss", (1,), np.float32)))
    params = make_params(graph, scheme, options.qas, options.fractional_weights)
    trainable_layers = [lp.layer for lp in params.values()]
    needed = tensors_needing_grad(graph, trainable_layers, logits)

    dlogits = graph.add_tensor(ir.Tensor(f"{logits.name}/grad", logits.shape, np.float32))
    q = logits.quant
    loss_op = ir.Op("TFLT_SOFTMAX_XENT", [logits, io.label], [io.loss, dlogits], custom=True, role="loss",
                    custom_options=SoftmaxXentOptions(logits_scale=float(q.scale[0]),
                                                      logits_zero_point=int(q.zero_point[0])).to_bytes())
    ctx = GradContext(graph, io, params, needed)
    backward = schedule(differentiate(graph, ctx, logits, dlogits), ctx, options.reorder,
                        ROUNDING_NAMES[options.rounding])

    forward = [_rewrite_forward(graph, op, params.get(id(op))) for op in graph.ops]
    init_inputs = [io.label, io.state]
    for lp in params.values():
        for p in lp.params():
            init_inputs += [p.initial, p.variable]
    init_op = ir.Op("TFLT_TRAIN_INIT", init_inputs, [], custom=True, role="init",
                    custom_options=TrainInitOptions().to_bytes())

    steps = [init_op] + forward + [loss_op] + backward
    graph.ops = lowering.lower_forward(graph, steps) if options.lower_forward else steps
    if options.activation_masks:
        graph.ops = masks.pack_masks(graph, graph.ops)
    if options.fuse_gradients and options.reorder:
        graph.ops = fused_grads.fuse_gradients(graph, graph.ops)
    if options.recompute:
        graph.ops = recompute.recompute_saved_activations(graph, graph.ops)
    image_inputs = list(graph.inputs)
    graph.inputs = image_inputs + [io.label, io.learning_rate]
    graph.outputs = list(graph.outputs) + [io.loss]
    graph.arena_offsets = memory.plan_arena(graph)
    metadata.attach(graph, io, image_inputs, logits, params, scheme_json, options)
    return graph


def _check_forward_model(graph: ir.Graph) -> None:
    if metadata.NAME in graph.metadata:
        raise UserError("model is already a training model")
    conv_ops = [(i, op) for i, op in enumerate(graph.ops) if op.kind in schemes.LAYER_KINDS]
    if not conv_ops:
        raise UserError("model has no CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED layer to train")
    for i, op in conv_ops:
        layers.check_quantized_layer(op, i)


def _find_logits(graph: ir.Graph) -> ir.Tensor:
    softmaxes = [op for op in graph.ops if op.kind == "SOFTMAX"]
    if len(softmaxes) != 1:
        raise UserError(f"model has {len(softmaxes)} SOFTMAX ops; tflm-train trains a classifier with exactly one")
    producers = graph.producers()
    logits = softmaxes[0].inputs[0]
    while logits.dtype != np.int8 and id(logits) in producers and producers[id(logits)].kind == "DEQUANTIZE":
        logits = producers[id(logits)].inputs[0]
    if logits.dtype != np.int8 or logits.quant is None:
        raise UserError(f"the SOFTMAX input '{logits.name}' is not int8-quantized logits")
    return logits


def _find_classifier(graph: ir.Graph, logits: ir.Tensor) -> ir.Op:
    producers = graph.producers()
    tensor = logits
    while id(tensor) in producers:
        op = producers[id(tensor)]
        if op.kind in schemes.LAYER_KINDS:
            return op
        if op.kind not in LOGIT_PASSTHROUGH:
            break
        tensor = op.inputs[0]
    raise UserError(f"cannot find the classifier layer producing the logits '{logits.name}'")


def _rewrite_forward(graph: ir.Graph, op: ir.Op, lp) -> ir.Op:
    """Points a trainable layer at its arena variables; a layer with a weight slice becomes a split conv."""
    if lp is None:
        return op
    inputs = list(op.inputs) + [None] * (3 - len(op.inputs))
    if lp.bias is not None:
        inputs[2] = lp.bias.variable
    if lp.weight is not None and not lp.split:
        inputs[1] = lp.weight.variable
    if not lp.split:
        op.inputs = inputs
        return op
    return lowering.split_conv_op(graph, op, inputs[0], inputs[1], lp.weight.variable, inputs[2])
