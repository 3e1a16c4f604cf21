"""The training metadata stored in a converted model (table TrainingMetadata of training_ops.fbs)."""
from __future__ import annotations

from typing import Optional

from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.schema.training_ops_generated import (FORMAT_VERSION, OpRole, Rounding, Trainable,
                                                      TrainingMetadata)

NAME = "TFLM_TRAIN"
ROLE_CODES = {"forward": OpRole.FORWARD, "init": OpRole.INIT, "loss": OpRole.LOSS,
              "backward": OpRole.BACKWARD, "update": OpRole.UPDATE}
ROLE_NAMES = {code: name for name, code in ROLE_CODES.items()}


def attach(graph: ir.Graph, io, image_inputs: list, logits: ir.Tensor, params: dict, scheme_json: str,
           options) -> None:
    index = {id(t): i for i, t in enumerate(graph.referenced_tensors())}
    layer_op = {id(op.outputs[0]): i for i, op in enumerate(graph.ops) if op.outputs}
    trainables = []
    for lp in params.values():
        for p in lp.params():
            trainables.append(Trainable(variable=index[id(p.variable)], initial_value=index[id(p.initial)],
                                        qas_scale=index[id(p.qas_scale)], kind=p.kind,
                                        layer_op=layer_op[id(lp.layer.outputs[0])],
                                        layer_name=lp.layer.outputs[0].name,
                                        channels=p.variable.shape[-1], param_id=p.param_id,
                                        fraction=-1 if p.fraction is None else index[id(p.fraction)]))
    md = TrainingMetadata(format_version=FORMAT_VERSION, image_input=index[id(image_inputs[0])],
                          label_input=index[id(io.label)], lr_input=index[id(io.learning_rate)],
                          loss_output=index[id(io.loss)], logits=index[id(logits)], state=index[id(io.state)],
                          trainables=trainables, op_roles=[int(ROLE_CODES[op.role]) for op in graph.ops],
                          rounding=Rounding.STOCHASTIC if options.rounding == "stochastic" else Rounding.NEAREST,
                          qas=options.qas, reordered=options.reorder, scheme_json=scheme_json)
    graph.metadata[NAME] = md.to_bytes()


def read(graph: ir.Graph) -> Optional[TrainingMetadata]:
    """The model's training metadata (None for a plain model); also restores each op's role."""
    raw = graph.metadata.get(NAME)
    if raw is None:
        return None
    try:
        md = TrainingMetadata.from_bytes(raw)
    except ValueError as exc:
        raise UserError(f"corrupt {NAME} metadata: {exc}") from None
    if md.format_version != FORMAT_VERSION:
        raise UserError(f"training model format {md.format_version}; this tflm-train reads format {FORMAT_VERSION}")
    if len(md.op_roles) != len(graph.ops):
        raise UserError(f"corrupt {NAME} metadata: {len(md.op_roles)} op roles for {len(graph.ops)} ops")
    for op, role in zip(graph.ops, md.op_roles):
        op.role = ROLE_NAMES.get(OpRole(role), "forward")
    return md


def trainable_arena_tensors(graph: ir.Graph, md) -> list:
    """(kind, layer name, tensor) of every arena tensor training updates, in metadata order: each
    trainable's variable ("weight" or "bias"), then its fractional bits ("fraction") if it has them."""
    tensors = graph.referenced_tensors()
    out = []
    for t in md.trainables:
        out.append(("bias" if t.kind else "weight", t.layer_name, tensors[t.variable]))
        if t.fraction >= 0:
            out.append(("fraction", t.layer_name, tensors[t.fraction]))
    return out
