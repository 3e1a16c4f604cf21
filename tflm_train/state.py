"""Trained state: every trainable variable's contents, saved, checked and baked back into a model.

A state file is an .npz keyed by variable tensor name, plus two header entries
(FORMAT_KEY, SHA_KEY: the sha256 of the training model it was trained on).
export() writes the state into the model's initial-value constants, so a fresh
interpreter (which copies them into the variables on its first invoke) starts
from the learned state. A sliced weight's variable holds the first K input
channels of its constant, so only those change.
"""
from __future__ import annotations

import hashlib

import numpy as np

from tflm_train import ir
from tflm_train.converter import metadata
from tflm_train.errors import UserError

FORMAT = "tflm-train-state-1"
FORMAT_KEY = "__tflm_train_format__"
SHA_KEY = "__tflm_train_model_sha256__"


def model_sha256(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


def variables(graph: ir.Graph) -> list:
    """(variable tensor, initial-value tensor) for every trainable, in metadata order."""
    md = metadata.read(graph)
    if md is None:
        raise UserError("not a training model: convert it first (tflm-train convert)")
    tensors = graph.referenced_tensors()
    pairs = [(tensors[t.variable], tensors[t.initial_value]) for t in md.trainables]
    names = [var.name for var, _ in pairs]
    if len(set(names)) != len(names) or any(name.startswith("__") for name in names):
        raise UserError("the model's trainable variables do not have unique names; cannot key a state by name")
    return pairs


def save(path: str, model_bytes: bytes, state: dict) -> None:
    header = {FORMAT_KEY: np.array(FORMAT), SHA_KEY: np.array(model_sha256(model_bytes))}
    try:
        with open(path, "wb") as f:
            np.savez(f, **header, **state)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None


def load(path: str) -> tuple:
    """(model sha256, {variable name: array}) from a state file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read state {path}: {exc}") from None
    if str(arrays.pop(FORMAT_KEY, "")) != FORMAT or SHA_KEY not in arrays:
        raise UserError(f"{path} is not a tflm-train state file (no {FORMAT} header)")
    return str(arrays.pop(SHA_KEY)), arrays


def export(model_bytes: bytes, state_path: str) -> ir.Graph:
    """The training model (as a graph) with the state of `state_path` as its initial values."""
    sha, state = load(state_path)
    if sha != model_sha256(model_bytes):
        raise UserError(f"{state_path} was trained on a different model "
                        f"(sha256 {sha[:12]}..., this model {model_sha256(model_bytes)[:12]}...)")
    graph = ir.load(model_bytes)
    pairs = variables(graph)
    expected = {var.name for var, _ in pairs}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise UserError(f"{state_path} does not match the model's trainables "
                        f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for var, initial in pairs:
        values = state[var.name]
        if values.shape != var.shape or values.dtype != var.dtype:
            raise UserError(f"{state_path}: {var.name} is {values.dtype} {list(values.shape)}, the model's "
                            f"variable is {var.dtype.name} {list(var.shape)}")
        data = initial.data.copy()
        data[..., :var.shape[-1]] = values
        initial.data = data
    return graph
