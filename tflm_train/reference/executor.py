"""Runs a whole Graph in numpy: the oracle TFLM and our C++ kernels are checked against.

Like TFLM, variable tensors live across invocations, start at zero (int8 ones at
their zero point) and return there on reset(); every other tensor keeps the
value its last producer wrote.
"""
from __future__ import annotations

import numpy as np

from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.reference.registry import KERNELS


def _initial_value(tensor: ir.Tensor) -> np.ndarray:
    fill = 0
    if tensor.dtype == np.int8 and tensor.quant is not None:
        fill = int(tensor.quant.zero_point[0])
    return np.full(tensor.shape, fill, tensor.dtype)


class Executor:
    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self._variables = {id(t): _initial_value(t) for t in graph.referenced_tensors() if t.is_variable}
        self._values: dict = {}

    def reset(self) -> None:
        """Variables back to their initial value, as TFLM's MicroInterpreter::Reset()."""
        for t in self.graph.referenced_tensors():
            if t.is_variable:
                self._variables[id(t)][...] = _initial_value(t)

    def invoke(self, inputs: list) -> list:
        """Runs every op in order; returns copies of the graph outputs."""
        if len(inputs) != len(self.graph.inputs):
            raise UserError(f"model has {len(self.graph.inputs)} inputs, got {len(inputs)}")
        for i, (tensor, data) in enumerate(zip(self.graph.inputs, inputs)):
            self._set_input(i, tensor, np.asarray(data))
        for index, op in enumerate(self.graph.ops):
            fn = KERNELS.get(op.kind)
            if fn is None:
                raise UserError(f"no reference kernel for {op.kind} (op {index})")
            args = [None if t is None else self._read(t, op, index) for t in op.inputs]
            outputs = fn(op, args)
            if len(outputs) != len(op.outputs):
                raise UserError(f"{op.kind} (op {index}) produced {len(outputs)} outputs, the model lists {len(op.outputs)}")
            for tensor, value in zip(op.outputs, outputs):
                self._write(tensor, np.asarray(value), f"{op.kind} (op {index})")
        return [self.value(t).copy() for t in self.graph.outputs]

    def value(self, tensor: ir.Tensor) -> np.ndarray:
        """Current value of any tensor: a variable's live array, a constant's data, or the last value written."""
        if id(tensor) in self._variables:
            return self._variables[id(tensor)]
        if tensor.is_constant:
            return tensor.data
        if id(tensor) not in self._values:
            raise UserError(f"tensor '{tensor.name}' has no value yet")
        return self._values[id(tensor)]

    def _set_input(self, i: int, tensor: ir.Tensor, data: np.ndarray) -> None:
        if data.dtype != tensor.dtype:
            raise UserError(f"input {i} '{tensor.name}' must be {tensor.dtype.name}, got {data.dtype.name}")
        if data.size != tensor.size:
            raise UserError(f"input {i} '{tensor.name}' must have shape {tensor.shape}, got {data.shape}")
        self._write(tensor, data.reshape(tensor.shape), f"input {i}")

    def _read(self, tensor: ir.Tensor, op: ir.Op, index: int) -> np.ndarray:
        if tensor.is_constant or id(tensor) in self._variables or id(tensor) in self._values:
            return self.value(tensor)
        raise UserError(f"{op.kind} (op {index}) reads tensor '{tensor.name}' before anything writes it")

    def _write(self, tensor: ir.Tensor, value: np.ndarray, writer: str) -> None:
        if value.dtype != tensor.dtype or value.shape != tensor.shape:
            raise UserError(f"{writer} produced {value.dtype.name} {value.shape} for tensor "
                            f"'{tensor.name}' of {tensor.dtype.name} {tensor.shape}")
        if id(tensor) in self._variables:
            self._variables[id(tensor)][...] = value
        else:
            # A copy: kernels may return views of their inputs, which can change later.
            self._values[id(tensor)] = value.copy()
