"""Sparse-update schemes: which layers' biases and weights a training step updates.

Two JSON spellings resolve to one `Scheme`:

Native (layers by graph op index or by output tensor name):
    {"bias": "last 12" | "all" | "none" | [17, "conv_out_name", ...],
     "weights": [{"layer": 17, "ratio": 0.25}, {"layer": "conv_out_name", "ratio": 1}],
     "classifier": true}

The reference implementation's keys (its published schemes work unchanged):
    {"n_bias_update": 20, "manual_weight_idx": [23, 24], "weight_update_ratio": [0, 0.25], ...}
where indices count the conv layers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) in
forward order, classifier included, and ratio 0 means bias only. As in the reference
implementation, the classifier is trained in full unless "classifier": false.

A weight ratio r in (0, 1] updates the first max(1, floor(r * I)) input channels
(the reference MCU engine's choice), so only that slice needs arena memory; for a
depthwise conv it selects the first channels.
"""
from __future__ import annotations

import dataclasses
import json
import math

from tflm_train import ir
from tflm_train.errors import UserError

LAYER_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
REFERENCE_KEYS = {"n_bias_update", "manual_weight_idx", "weight_update_ratio",
                  "weight_select_criteria", "pw1_weight_only", "classifier"}
NATIVE_KEYS = {"bias", "weights", "classifier"}


@dataclasses.dataclass
class LayerUpdate:
    op: ir.Op
    bias: bool = False
    # Trainable channels (0: weights frozen): the first input channels of a CONV_2D/FC
    # (only that slice lives in the arena), the first channels of a depthwise (its whole,
    # small, weight lives in the arena and the other channels get update scale 0).
    weight_channels: int = 0


@dataclasses.dataclass
class Scheme:
    updates: list                 # LayerUpdate, in forward order
    source: dict                  # the JSON as given

    def to_json(self, graph: ir.Graph) -> str:
        index = {id(op): i for i, op in enumerate(graph.ops)}
        return json.dumps({"layers": [{"op": index[id(u.op)], "name": u.op.outputs[0].name, "kind": u.op.kind,
                                       "bias": u.bias, "weight_channels": u.weight_channels,
                                       "input_channels": input_channels(u.op)} for u in self.updates]},
                          sort_keys=True)


def input_channels(op: ir.Op) -> int:
    """Last weight axis: input channels of CONV_2D (OHWI) and FULLY_CONNECTED (OI); all channels of a depthwise."""
    return op.inputs[1].shape[-1]


def conv_layers(graph: ir.Graph) -> list:
    return [op for op in graph.ops if op.kind in LAYER_KINDS]


def load_scheme_file(path: str) -> dict:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise UserError(f"cannot read scheme {path}: {exc.strerror}") from None
    try:
        source = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"scheme {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(source, dict):
        raise UserError(f"scheme {path}: expected a JSON object")
    return source


def resolve(source: dict, graph: ir.Graph, classifier: ir.Op) -> Scheme:
    """Turns scheme JSON into per-layer updates, validating every field against the graph."""
    keys = set(source)
    if keys & {"n_bias_update", "manual_weight_idx", "weight_update_ratio"}:
        unknown = keys - REFERENCE_KEYS
        resolved = _resolve_reference(source, graph, classifier)
    else:
        unknown = keys - NATIVE_KEYS
        resolved = _resolve_native(source, graph, classifier)
    if unknown:
        raise UserError(f"scheme: unknown field '{sorted(unknown)[0]}'")
    if not resolved:
        raise UserError("scheme: updates nothing (no bias, weights or classifier)")
    return Scheme(resolved, source)


def _resolve_native(source: dict, graph: ir.Graph, classifier: ir.Op) -> list:
    layers = conv_layers(graph)
    updates: dict = {}

    def update(op) -> LayerUpdate:
        return updates.setdefault(id(op), LayerUpdate(op))

    bias = source.get("bias", "none")
    if isinstance(bias, str):
        for op in _bias_window_from_words(bias, layers):
            update(op).bias = True
    elif isinstance(bias, list):
        for i, ref in enumerate(bias):
            update(_layer(ref, graph, f"bias[{i}]")).bias = True
    else:
        raise UserError("scheme: bias must be \"last N\", \"all\", \"none\" or a list of layers")

    weights = source.get("weights", [])
    if not isinstance(weights, list):
        raise UserError("scheme: weights must be a list of {\"layer\": ..., \"ratio\": ...}")
    for i, entry in enumerate(weights):
        field = f"weights[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"layer", "ratio"} or "layer" not in entry:
            raise UserError(f"scheme: {field} must be {{\"layer\": op index or tensor name, \"ratio\": r}}")
        op = _layer(entry["layer"], graph, f"{field}.layer")
        ratio = _ratio(entry.get("ratio", 1.0), f"{field}.ratio", allow_zero=False)
        update(op).weight_channels = _channels(op, ratio)

    classifier_on = source.get("classifier", False)
    if not isinstance(classifier_on, bool):
        raise UserError("scheme: classifier must be true or false")
    if classifier_on:
        u = update(classifier)
        u.bias = True
        u.weight_channels = input_channels(classifier)

    ordered = [updates[id(op)] for op in layers if id(op) in updates]
    _check_window(ordered, layers, "weights")
    return ordered


def _resolve_reference(source: dict, graph: ir.Graph, classifier: ir.Op) -> list:
    layers = conv_layers(graph)
    # The reference implementation's bias window is the last n convs *before* the classifier,
    # which it always trains separately; its indices still count the classifier as the last conv.
    body = [op for op in layers if op is not classifier]
    n_bias = source.get("n_bias_update", 0)
    if not isinstance(n_bias, int) or isinstance(n_bias, bool) or not 0 <= n_bias <= len(body):
        raise UserError(f"scheme: n_bias_update must be an integer in [0, {len(body)}]")
    idx = source.get("manual_weight_idx", [])
    ratios = source.get("weight_update_ratio", [])
    if not isinstance(idx, list) or not isinstance(ratios, list):
        raise UserError("scheme: manual_weight_idx and weight_update_ratio must be lists")
    if len(idx) != len(ratios):
        raise UserError(f"scheme: weight_update_ratio has {len(ratios)} entries for {len(idx)} manual_weight_idx")
    if source.get("pw1_weight_only", 0):
        raise UserError("scheme: pw1_weight_only is not supported")
    updates = {id(op): LayerUpdate(op, bias=True) for op in body[len(body) - n_bias:]}
    for i, (conv_index, ratio) in enumerate(zip(idx, ratios)):
        field = f"manual_weight_idx[{i}]"
        if not isinstance(conv_index, int) or isinstance(conv_index, bool) or not 0 <= conv_index < len(layers):
            raise UserError(f"scheme: {field}: conv index {conv_index!r} out of range (model has {len(layers)} conv layers)")
        op = layers[conv_index]
        ratio = _ratio(ratio, f"weight_update_ratio[{i}]", allow_zero=True)
        if ratio == 0:
            continue
        u = updates.get(id(op))
        if u is None and op is not classifier:
            raise UserError(f"scheme: {field}: conv {conv_index} is outside the bias window "
                            f"(last {n_bias} conv layers before the classifier)")
        u = u or updates.setdefault(id(op), LayerUpdate(op))
        u.weight_channels = _channels(op, ratio)
    if source.get("classifier", True):
        u = updates.setdefault(id(classifier), LayerUpdate(classifier))
        u.bias = True
        u.weight_channels = input_channels(classifier)
    return [updates[id(op)] for op in layers if id(op) in updates]


def _bias_window_from_words(words: str, layers: list) -> list:
    text = words.strip().lower()
    if text == "none":
        return []
    if text == "all":
        return layers
    parts = text.split()
    if len(parts) == 2 and parts[0] == "last" and parts[1].isdigit():
        n = int(parts[1])
        if not 0 <= n <= len(layers):
            raise UserError(f"scheme: bias: \"last {n}\" but the model has {len(layers)} conv layers")
        return layers[len(layers) - n:]
    raise UserError(f"scheme: bias: expected \"last N\", \"all\" or \"none\", got {words!r}")


def _layer(ref, graph: ir.Graph, field: str) -> ir.Op:
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise UserError(f"scheme: {field}: a layer is an op index or an output tensor name, got {ref!r}")
    if isinstance(ref, int):
        if not 0 <= ref < len(graph.ops):
            raise UserError(f"scheme: {field}: unknown layer: op index {ref} out of range (model has {len(graph.ops)} ops)")
        op = graph.ops[ref]
    else:
        matches = [op for op in graph.ops if op.outputs and op.outputs[0].name == ref]
        if not matches:
            raise UserError(f"scheme: {field}: unknown layer: no op outputs a tensor named {ref!r}")
        op = matches[0]
    if op.kind not in LAYER_KINDS:
        raise UserError(f"scheme: {field}: layer {ref!r} is a {op.kind}, not a trainable layer ({', '.join(LAYER_KINDS)})")
    return op


def _ratio(value, field: str, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    low_ok = ok and (value >= 0 if allow_zero else value > 0)
    if not (low_ok and value <= 1):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise UserError(f"scheme: {field}: ratio must be in {bound}, got {value!r}")
    return float(value)


def _channels(op: ir.Op, ratio: float) -> int:
    return max(1, int(math.floor(ratio * input_channels(op) + 1e-9)))


def _check_window(updates: list, layers: list, field: str) -> None:
    """Backprop stops at the earliest bias-updated layer: weights below it would need a longer backward pass."""
    position = {id(op): i for i, op in enumerate(layers)}
    bias_positions = [position[id(u.op)] for u in updates if u.bias]
    first = min(bias_positions) if bias_positions else len(layers)
    for u in updates:
        if u.weight_channels and position[id(u.op)] < first:
            raise UserError(f"scheme: {field}: layer '{u.op.outputs[0].name}' (conv {position[id(u.op)]}) "
                            f"is outside the bias window (conv {first} onwards)")
