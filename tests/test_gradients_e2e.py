"""Whole-model gradient check: the converted model's materialised gradients (conventional schedule,
run by the reference executor) equal TensorFlow autodiff of the dequantized float network with the
same straight-through masks, for every trainable layer of a small TF-converted int8 model."""
import numpy as np
import pytest

import tf_models
from tflm_train import ir
from tflm_train.converter import layers, metadata, pipeline
from tflm_train.reference import Executor


def dequant(t, q):
    return (np.asarray(q, np.float64) - t.quant.zero_point[0]) * t.quant.scale[0]


def float_twin(tf, graph, executor, label):
    """TF tape over the forward ops: values are the int8 forward's (dequantized), gradients flow
    through the real-valued op with the activation's straight-through mask."""
    variables, tape_values = {}, {}

    def value(t):
        const = tf.constant(dequant(t, executor.value(t)) if t.quant is not None else executor.value(t), tf.float64)
        if id(t) not in tape_values:
            return const
        live = tape_values[id(t)]
        return const + live - tf.stop_gradient(live)

    def param(t, scale, name):
        data = executor.value(t).astype(np.float64)
        var = tf.Variable(data * scale, name=name)
        variables[t.name] = var
        return var

    logits = None
    with tf.GradientTape() as tape:
        for op in graph.ops:
            if op.role != "forward" or op.kind in ("SOFTMAX", "TFLT_ACTIVATION_MASK"):  # the mask has no value
                continue
            x, y = op.inputs[0], op.outputs[0]
            if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TFLT_CONV_2D_SPLIT"):
                w = op.inputs[1]
                s_w = np.asarray(w.quant.scale, np.float64)
                s_x = float(x.quant.scale[0])
                wv = param(w, s_w.reshape((1,) * (len(w.shape) - 1) + (-1,)) if op.kind == "DEPTHWISE_CONV_2D"
                           else s_w.reshape((-1,) + (1,) * (len(w.shape) - 1)), w.name)
                bv = param(op.inputs[2], s_w * s_x, op.inputs[2].name)
                padding = None if op.kind == "FULLY_CONNECTED" else "SAME" if op.options.padding == 0 else "VALID"
                if op.kind == "FULLY_CONNECTED":
                    lin = tf.matmul(tf.reshape(value(x), (1, -1)), wv, transpose_b=True) + bv
                elif op.kind == "CONV_2D":
                    lin = tf.nn.conv2d(value(x), tf.transpose(wv, (1, 2, 3, 0)), (op.options.strideH, op.options.strideW),
                                       padding) + bv
                else:
                    c = x.shape[-1]
                    kernel = tf.reshape(wv, (w.shape[1], w.shape[2], c, w.shape[3] // c))
                    lin = tf.nn.depthwise_conv2d(value(x), kernel, (1, op.options.strideH, op.options.strideW, 1),
                                                 padding) + bv
                _, lo, hi = layers.activation_bounds(op)
                yq = executor.value(y)
                mask = ((yq > lo) & (yq < hi)) if layers.fused_activation(op) else np.ones(yq.shape, bool)
                out = lin * tf.constant(mask.reshape(lin.shape), tf.float64)
            elif op.kind == "ADD":
                out = value(op.inputs[0]) + value(op.inputs[1])
            elif op.kind in ("MEAN", "AVERAGE_POOL_2D"):
                out = tf.reduce_mean(value(x), axis=(1, 2), keepdims=len(y.shape) == 4)
            elif op.kind in ("RESHAPE", "SQUEEZE"):
                out = tf.reshape(value(x), y.shape)
            elif op.kind == "PAD":
                out = tf.pad(value(x), op.inputs[1].data)
            else:
                raise AssertionError(f"no float twin for {op.kind}")
            tape_values[id(y)] = tf.reshape(out, y.shape)
        logits_tensor = graph.ops[[op.kind for op in graph.ops].index("SOFTMAX")].inputs[0]
        logits = value(logits_tensor)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant([label]), tf.reshape(logits, (1, -1)))
    grads = tape.gradient(loss, list(variables.values()))
    return {name: g.numpy() for name, g in zip(variables, grads)}


@pytest.mark.parametrize("variant", [dict(residual=True, pad=True), dict(pool="avgpool")])
def test_materialised_gradients_match_tensorflow(variant):
    tf = pytest.importorskip("tensorflow")
    graph = ir.load(tf_models.mobilenet_like(**variant))
    conv_ops = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    scheme = {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in conv_ops], "classifier": True}
    # Stock forward ops: their float twins are TF's (the lowered ones equal them bit for bit, test_training_tflm).
    pipeline.convert(graph, scheme, pipeline.ConvertOptions(reorder=False, lower_forward=False))
    graph = ir.load(ir.emit(graph))
    md = metadata.read(graph)
    tensors = graph.referenced_tensors()

    rng = np.random.default_rng(3)
    image = rng.integers(-128, 128, graph.inputs[0].shape, dtype=np.int8)
    label = 2
    executor = Executor(graph)
    executor.invoke([image, np.array([label], np.int32), np.array([0.0], np.float32)])

    expected = float_twin(tf, graph, executor, label)
    grad_of = {id(op.inputs[4]): op.inputs[3] for op in graph.ops if op.kind == "TFLT_SGD_UPDATE"}
    checked = 0
    for t in md.trainables:
        var = tensors[t.variable]
        ours = executor.value(grad_of[id(var)]).astype(np.float64)
        theirs = expected[var.name].reshape(ours.shape)
        scale = max(np.abs(theirs).max(), 1e-12)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4 * scale, err_msg=var.name)
        checked += 1
    assert checked == 2 * (len(conv_ops) + 1)
