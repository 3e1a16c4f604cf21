"""An imported int8 classifier as a plain float network (.npz) that TensorFlow can run.

TensorFlow and tflite_micro must not share a process, and tflm_train.ir imports
tflite_micro's schema module. So this side (tflm_train, no TensorFlow) writes the
dequantised network as JSON plus numpy arrays, and fp32_finetune.py (TensorFlow,
no tflm_train) rebuilds it. The float network is the function the int8 graph
approximates: every weight and bias dequantised, the declared fused activation
(RELU6 / RELU / none) applied in float instead of the int8 clamp to the output's
calibrated range, explicit PAD kept, residual ADD and the global average pool in
float, and the classifier's logits (the SOFTMAX input) as the output.

Layouts are TensorFlow's: conv filters HWIO, depthwise filters [kh, kw, C, 1],
the classifier's weight [I, O].
"""
from __future__ import annotations

import json

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train import ir
from tflm_train.converter import layers, scheme
from tflm_train.errors import UserError

ACTIVATIONS = {schema.ActivationFunctionType.NONE: "NONE", schema.ActivationFunctionType.RELU: "RELU",
               schema.ActivationFunctionType.RELU6: "RELU6"}
PADDINGS = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}
NETWORK_KEY = "network"


def export(graph: ir.Graph) -> dict:
    """{"network": JSON text, "<op>/weight", "<op>/bias": float32 arrays} of an import-mcunet graph."""
    tensor_ids = {id(t): i for i, t in enumerate(graph.referenced_tensors())}
    image = graph.inputs[0]
    arrays, ops, logits = {}, [], None
    for index, op in enumerate(graph.ops):
        if op.kind == "SOFTMAX":
            logits = tensor_ids[id(op.inputs[0])]
            continue
        entry = {"kind": op.kind, "inputs": [tensor_ids[id(t)] for t in op.inputs if t is not None and t.data is None],
                 "output": tensor_ids[id(op.outputs[0])]}
        entry.update(_describe(op, graph, f"{index}", arrays))
        ops.append(entry)
    if logits is None:
        raise UserError("the model has no SOFTMAX: cannot tell which tensor holds the logits")
    network = {"input": tensor_ids[id(image)], "input_shape": list(image.shape[1:]),
               "input_scale": float(image.quant.scale[0]), "input_zero_point": int(image.quant.zero_point[0]),
               "logits": logits, "ops": ops}
    arrays[NETWORK_KEY] = np.array(json.dumps(network))
    return arrays


def _describe(op: ir.Op, graph: ir.Graph, key: str, arrays: dict) -> dict:
    """The op's attributes for TensorFlow; its weight and bias go into `arrays` under `key`."""
    if op.kind == "PAD":
        return {"paddings": op.inputs[1].data.tolist()}
    if op.kind == "ADD":
        if layers.fused_activation(op) != schema.ActivationFunctionType.NONE:
            raise UserError(f"ADD '{op.outputs[0].name}' has a fused activation; the float export has none")
        return {}
    if op.kind == "AVERAGE_POOL_2D":
        _, height, width, _ = op.inputs[0].shape
        if (op.options.filterHeight, op.options.filterWidth) != (height, width):
            raise UserError(f"AVERAGE_POOL_2D '{op.outputs[0].name}' is not a global pool")
        return {}
    if op.kind not in scheme.LAYER_KINDS:
        raise UserError(f"the float export does not know {op.kind} ('{op.outputs[0].name}')")
    weight, bias = _dequantize(op.inputs[1]), _dequantize(op.inputs[2])
    if op.kind == "CONV_2D":
        arrays[f"{key}/weight"] = weight.transpose(1, 2, 3, 0)        # OHWI -> HWIO
    elif op.kind == "DEPTHWISE_CONV_2D":
        arrays[f"{key}/weight"] = weight[0][..., None]                # [1,kh,kw,C] -> [kh,kw,C,1]
    else:
        arrays[f"{key}/weight"] = weight.T                            # [O,I] -> [I,O]
    arrays[f"{key}/bias"] = bias
    entry = {"params": key, "activation": ACTIVATIONS[layers.fused_activation(op)]}
    if op.kind != "FULLY_CONNECTED":
        entry.update(stride=op.options.strideH, padding=PADDINGS[op.options.padding])
    return entry


def _dequantize(tensor: ir.Tensor) -> np.ndarray:
    """Real values of a quantised constant, per channel along its quantised axis."""
    quant = tensor.quant
    shape = [1] * tensor.data.ndim
    shape[quant.axis if quant.per_channel else 0] = -1
    scale = quant.scale.astype(np.float64).reshape(shape)
    zero_point = quant.zero_point.reshape(shape)
    return ((tensor.data.astype(np.float64) - zero_point) * scale).astype(np.float32)
