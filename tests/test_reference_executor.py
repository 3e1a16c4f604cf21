"""The numpy reference executor reproduces the TFLM interpreter bit for bit.

Every op's output is compared, not only the model outputs, so a mismatch names
the first op that differs. TensorFlow builds the small models in this process;
TFLM only ever runs in a worker process (tflm_train.tflm_runner.TflmSession).
"""
from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from conftest import shared_path
from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.reference import KERNELS, Executor
from tflm_train.reference import quantization as q
from tflm_train.tflm_runner import TflmSession

PERSON_DETECT = ("models", "tflm", "person_detect.tflite")
VWW = ("models", "mlperf-tiny", "visual_wake_words.tflite")

# Every builtin the reference executor promises; some test model below must use each.
PROMISED_BUILTINS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "AVERAGE_POOL_2D",
                     "RESHAPE", "SQUEEZE", "PAD", "QUANTIZE", "DEQUANTIZE", "SOFTMAX", "SLICE"}


# ---------------------------------------------------------------- comparison

def assert_matches_tflm(model_bytes: bytes, input_sets: list) -> None:
    """Runs every input set through both engines and compares every op output exactly."""
    graph = ir.load(model_bytes)
    index = {id(t): i for i, t in enumerate(graph.tensors)}
    produced = [(op_index, op, t) for op_index, op in enumerate(graph.ops) for t in op.outputs]
    runs = []
    with TflmSession(model_bytes, preserve_all_tensors=True) as session:
        for inputs in input_sets:
            session.reset()
            outputs = session.invoke(inputs)
            runs.append(list(outputs) + [session.tensor(index[id(t)]) for _, _, t in produced])
    executor = Executor(graph)
    for set_index, (inputs, tflm_values) in enumerate(zip(input_sets, runs)):
        outputs = executor.invoke(inputs)
        ours_by_op = [executor.value(t) for _, _, t in produced]
        for (op_index, op, t), ours, theirs in zip(produced, ours_by_op, tflm_values[len(graph.outputs):]):
            _assert_same(ours, theirs, f"input set {set_index}: op {op_index} {op.kind} -> '{t.name}'")
        for i, (ours, theirs) in enumerate(zip(outputs, tflm_values)):
            _assert_same(ours, theirs, f"input set {set_index}: model output {i}")


def _assert_same(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    theirs = np.asarray(theirs)
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} vs TFLM {theirs.dtype}"
    theirs = theirs.reshape(ours.shape)
    same = ours == theirs
    if ours.dtype.kind == "f":
        same |= np.isnan(ours) & np.isnan(theirs)
    differ = ~same
    assert not differ.any(), (f"{what}: {int(differ.sum())} of {ours.size} elements differ, e.g. ours "
                              f"{ours[differ][:5]} vs TFLM {theirs[differ][:5]}")


def random_inputs(graph: ir.Graph, rng: np.random.Generator, float_range=(-1.5, 1.5)) -> list:
    inputs = []
    for t in graph.inputs:
        if t.dtype == np.int8:
            inputs.append(rng.integers(-128, 128, t.shape).astype(np.int8))
        else:
            inputs.append(rng.uniform(*float_range, t.shape).astype(t.dtype))
    return inputs


# ---------------------------------------------------------------- shared models

def _shared_model(parts: tuple) -> bytes:
    return Path(shared_path(*parts)).read_bytes()


def _shared_image(name: str) -> np.ndarray:
    """A 96x96 8-bit BMP (rows stored bottom-up) as its raw pixel bytes, top row first."""
    raw = Path(shared_path("models", "tflm", f"{name}.bmp")).read_bytes()
    return np.frombuffer(raw[1078:1078 + 96 * 96], np.uint8).reshape(96, 96)[::-1]


def test_person_detect_matches_tflm():
    model = _shared_model(PERSON_DETECT)
    rng = np.random.default_rng(1)
    images = [_shared_image(n).view(np.int8).reshape(1, 96, 96, 1) for n in ("person", "no_person")]
    graph = ir.load(model)
    assert_matches_tflm(model, [[x] for x in images] + [random_inputs(graph, rng) for _ in range(3)])


def test_visual_wake_words_matches_tflm():
    model = _shared_model(VWW)
    rng = np.random.default_rng(2)
    images = [np.repeat(_shared_image(n)[None, :, :, None], 3, axis=-1).astype(np.float32)
              for n in ("person", "no_person")]
    graph = ir.load(model)
    assert_matches_tflm(model, [[x] for x in images]
                        + [random_inputs(graph, rng, (-20.0, 280.0)) for _ in range(3)])


def test_reference_is_fast_enough_for_mobilenet():
    import time
    graph = ir.load(_shared_model(PERSON_DETECT))
    executor = Executor(graph)
    x = random_inputs(graph, np.random.default_rng(3))
    executor.invoke(x)
    start = time.perf_counter()
    executor.invoke(x)
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------- TensorFlow-built models

def _conv_stack(tf, rng):
    """Strided SAME, VALID, dilated conv and depthwise (multiplier 2, dilated), ReLU/ReLU6."""
    c = lambda *shape, s=0.4: tf.constant(rng.normal(0.0, s, shape).astype(np.float32))  # noqa: E731
    w1, b1 = c(3, 3, 3, 8), c(8)
    dw1, db1 = c(3, 3, 8, 2), c(16)
    w3, b3 = c(3, 3, 16, 6), c(6)
    dw2, db2 = c(3, 3, 6, 1), c(6)
    w5, b5 = c(2, 3, 6, 5), c(5)

    @tf.function(input_signature=[tf.TensorSpec([1, 13, 11, 3], tf.float32)])
    def model(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w1, strides=2, padding="SAME") + b1)
        y = tf.nn.relu6(tf.nn.depthwise_conv2d(y, dw1, strides=[1, 1, 1, 1], padding="VALID") + db1)
        y = tf.nn.conv2d(y, w3, strides=1, padding="SAME", dilations=2) + b3
        y = tf.raw_ops.DepthwiseConv2dNative(input=y, filter=dw2, strides=[1, 1, 1, 1], padding="SAME",
                                             dilations=[1, 2, 2, 1]) + db2
        return tf.nn.relu6(tf.nn.conv2d(y, w5, strides=[1, 1, 2, 1], padding="VALID") + b5)
    return model


def _residual(tf, rng):
    """Residual ADD of two differently scaled branches (fused ReLU), MEAN keep_dims, broadcast ADD."""
    c = lambda *shape, s=0.4: tf.constant(rng.normal(0.0, s, shape).astype(np.float32))  # noqa: E731
    w1, b1 = c(1, 1, 4, 8), c(8)
    w2, b2 = c(3, 3, 8, 8, s=0.2), c(8)
    w3, b3 = c(1, 1, 8, 8, s=1.5), c(8)

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def model(x):
        h = tf.nn.relu(tf.nn.conv2d(x, w1, strides=1, padding="SAME") + b1)
        a = tf.nn.conv2d(h, w2, strides=1, padding="SAME") + b2
        b = tf.nn.conv2d(h, w3, strides=1, padding="SAME") + b3
        s = tf.nn.relu(a + b)
        return s + tf.reduce_mean(s, axis=[1, 2], keepdims=True)
    return model


def _head(tf, rng):
    """PAD, average pooling (SAME with partial windows, VALID), SLICE, MEAN, FC, SOFTMAX."""
    c = lambda *shape, s=0.4: tf.constant(rng.normal(0.0, s, shape).astype(np.float32))  # noqa: E731
    w1, b1 = c(3, 3, 3, 8), c(8)
    f1, fb1 = c(8, 6), c(6)
    f2, fb2 = c(6, 4, s=1.0), c(4)

    @tf.function(input_signature=[tf.TensorSpec([1, 10, 10, 3], tf.float32)])
    def model(x):
        p = tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]])
        h = tf.nn.relu6(tf.nn.conv2d(p, w1, strides=1, padding="VALID") + b1)
        a = tf.nn.avg_pool2d(h, 3, 2, "SAME")
        a2 = tf.nn.avg_pool2d(a, 2, 2, "VALID")
        part = tf.reduce_mean(tf.slice(a, [0, 1, 1, 2], [1, 4, 3, 5]), axis=[1, 2])
        pooled = tf.squeeze(tf.reduce_mean(a2, axis=[1, 2], keepdims=True), axis=[1, 2])
        d = tf.nn.relu(tf.matmul(pooled, f1) + fb1)
        return tf.nn.softmax(tf.matmul(d, f2) + fb2), part
    return model


def _wide(tf, rng):
    """Long reductions, where rounding and summation order show: MEAN over 132 and 11
    elements, RESHAPE into a 5280-deep FC, a 40-way softmax."""
    c = lambda *shape, s=0.4: tf.constant(rng.normal(0.0, s, shape).astype(np.float32))  # noqa: E731
    f1, fb1 = c(12 * 11 * 40, 40, s=0.05), c(40)

    @tf.function(input_signature=[tf.TensorSpec([1, 12, 11, 40], tf.float32)])
    def model(x):
        logits = tf.matmul(tf.reshape(x, [1, -1]), f1) + fb1
        return tf.nn.softmax(logits), tf.reduce_mean(x, axis=[1, 2]), tf.reduce_mean(x, axis=[2])
    return model


MODEL_BUILDERS = {"conv_stack": _conv_stack, "residual": _residual, "head": _head, "wide": _wide}


def _convert(tf, fn, quantize: bool, per_channel: bool = True) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if quantize:
        shape = fn.input_signature[0].shape
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.uniform(-1, 1, shape).astype(np.float32)]
                                                     for _ in range(32))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if not per_channel:
            converter._experimental_disable_per_channel = True
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return bytes(converter.convert())


@pytest.fixture(scope="session")
def converted_models() -> dict:
    """name -> .tflite bytes: each builder as int8 (per-channel and per-tensor) and float32."""
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is needed to build the test models")
    models = {}
    for name, build in MODEL_BUILDERS.items():
        fn = build(tf, np.random.default_rng(len(models)))
        models[f"{name}_int8"] = _convert(tf, fn, quantize=True)
        models[f"{name}_int8_per_tensor"] = _convert(tf, fn, quantize=True, per_channel=False)
        models[f"{name}_float"] = _convert(tf, fn, quantize=False)
    return models


@pytest.mark.parametrize("name", [f"{m}_{v}" for m in MODEL_BUILDERS for v in ("int8", "int8_per_tensor", "float")])
def test_tensorflow_models_match_tflm(converted_models, name):
    model = converted_models[name]
    graph = ir.load(model)
    rng = np.random.default_rng(4)
    assert_matches_tflm(model, [random_inputs(graph, rng) for _ in range(4)])


# ---------------------------------------------------------------- hand-built graphs

def _quant(scale, zero_point):
    return ir.Quant(np.float32(scale), zero_point)


def _quantize_chain_graph() -> ir.Graph:
    """float -> QUANTIZE -> SQUEEZE -> QUANTIZE (int8 requantize) -> DEQUANTIZE -> float."""
    x = ir.Tensor("x", (1, 4, 6, 1), np.float32)
    q1 = ir.Tensor("q1", (1, 4, 6, 1), np.int8, quant=_quant(0.05, 3))
    sq = ir.Tensor("sq", (1, 4, 6), np.int8, quant=_quant(0.05, 3))
    q2 = ir.Tensor("q2", (1, 4, 6), np.int8, quant=_quant(0.1137, -7))
    y = ir.Tensor("y", (1, 4, 6), np.float32)
    squeeze = schema.SqueezeOptionsT()
    squeeze.squeezeDims = np.array([3], np.int32)
    ops = [ir.Op("QUANTIZE", [x], [q1]), ir.Op("SQUEEZE", [q1], [sq], squeeze),
           ir.Op("QUANTIZE", [sq], [q2]), ir.Op("DEQUANTIZE", [q2], [y])]
    return ir.Graph(ops, [x], [y, sq], [x, q1, sq, q2, y])


def test_quantize_requantize_dequantize_match_tflm():
    graph = _quantize_chain_graph()
    # Exact multiples of half a quantization step exercise the ties of round().
    ties = (np.arange(24, dtype=np.float32) - 12) * np.float32(0.025)
    rng = np.random.default_rng(6)
    input_sets = [[ties.reshape(1, 4, 6, 1)], [rng.uniform(-9, 9, (1, 4, 6, 1)).astype(np.float32)]]
    assert_matches_tflm(ir.emit(graph), input_sets)


def _single_op_graph(kind: str, x: ir.Tensor, y: ir.Tensor, options, constants=()) -> ir.Graph:
    return ir.Graph([ir.Op(kind, [x, *constants], [y], options)], [x], [y], [x, *constants, y])


# (input shape, axes, keep_dims, input scale, output scale): TFLM folds 1/count into the
# requantisation multiplier, so the rounding differs from dividing, most at small counts.
MEAN_CASES = [((1, 16, 7, 96), [2], True, 0.0078, 0.0078),
              ((1, 16, 7, 96), [-2], False, 0.0078, 0.0046),
              ((1, 12, 11, 64), [2, 1], False, 0.05, 0.0312),
              ((1, 9, 9, 128), [1, 2], True, 0.0213, 0.0213)]


@pytest.mark.parametrize("shape,axes,keep_dims,x_scale,y_scale", MEAN_CASES)
def test_int8_mean_rounding_matches_tflm(shape, axes, keep_dims, x_scale, y_scale):
    reduced = {a % len(shape) for a in axes}
    out_shape = tuple(1 if i in reduced else d for i, d in enumerate(shape) if keep_dims or i not in reduced)
    options = schema.ReducerOptionsT()
    options.keepDims = keep_dims
    graph = _single_op_graph("MEAN", ir.Tensor("x", shape, np.int8, quant=_quant(x_scale, -3)),
                             ir.Tensor("y", out_shape, np.int8, quant=_quant(y_scale, 11)), options,
                             [ir.Tensor("axes", (len(axes),), np.int32, np.array(axes, np.int32))])
    rng = np.random.default_rng(7)
    assert_matches_tflm(ir.emit(graph), [random_inputs(graph, rng) for _ in range(2)])


@pytest.mark.parametrize("x_scale,beta", [(0.004, 1.0), (0.0684, 1.0), (0.25, 0.7), (1.5, 1.0)])
def test_int8_softmax_matches_tflm(x_scale, beta):
    options = schema.SoftmaxOptionsT()
    options.beta = beta
    graph = _single_op_graph("SOFTMAX", ir.Tensor("x", (128, 10), np.int8, quant=_quant(x_scale, 5)),
                             ir.Tensor("y", (128, 10), np.int8, quant=_quant(1 / 256, -128)), options)
    rng = np.random.default_rng(8)
    assert_matches_tflm(ir.emit(graph), [random_inputs(graph, rng) for _ in range(2)])


@pytest.mark.parametrize("b_shape,a_scale,b_scale,y_scale,activation", [
    ((1, 32, 48), 0.02, 0.02, 0.03, schema.ActivationFunctionType.NONE),
    ((1, 32, 48), 0.011, 0.047, 0.05, schema.ActivationFunctionType.RELU),
    ((48,), 0.09, 0.013, 0.04, schema.ActivationFunctionType.RELU6),
    ((1, 32, 1), 0.3, 0.2, 0.1, schema.ActivationFunctionType.RELU_N1_TO_1)])
def test_int8_add_matches_tflm(b_shape, a_scale, b_scale, y_scale, activation):
    options = schema.AddOptionsT()
    options.fusedActivationFunction = activation
    a = ir.Tensor("a", (1, 32, 48), np.int8, quant=_quant(a_scale, -5))
    b = ir.Tensor("b", b_shape, np.int8, quant=_quant(b_scale, 17))
    y = ir.Tensor("y", (1, 32, 48), np.int8, quant=_quant(y_scale, -20))
    graph = ir.Graph([ir.Op("ADD", [a, b], [y], options)], [a, b], [y], [a, b, y])
    rng = np.random.default_rng(9)
    assert_matches_tflm(ir.emit(graph), [random_inputs(graph, rng) for _ in range(2)])


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_grouped_conv_matches_tflm(dtype):
    """CONV_2D whose weight covers half the input channels: two groups of three filters."""
    rng = np.random.default_rng(12)
    options = schema.Conv2DOptionsT()
    options.padding, options.strideH, options.strideW = schema.Padding.SAME, 2, 1
    options.dilationHFactor = options.dilationWFactor = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.RELU
    quantized = dtype == np.int8
    if quantized:
        w = ir.Tensor("w", (6, 3, 3, 2), np.int8, rng.integers(-127, 128, (6, 3, 3, 2)),
                      ir.Quant(rng.uniform(0.005, 0.02, 6), np.zeros(6)))
        bias = ir.Tensor("b", (6,), np.int32, rng.integers(-3000, 3000, 6))
    else:
        w = ir.Tensor("w", (6, 3, 3, 2), np.float32, rng.normal(0, 1, (6, 3, 3, 2)))
        bias = ir.Tensor("b", (6,), np.float32, rng.normal(0, 1, 6))
    x = ir.Tensor("x", (1, 7, 5, 4), dtype, quant=_quant(0.05, -4) if quantized else None)
    y = ir.Tensor("y", (1, 4, 5, 6), dtype, quant=_quant(0.1, -60) if quantized else None)
    graph = _single_op_graph("CONV_2D", x, y, options, [w, bias])
    assert_matches_tflm(ir.emit(graph), [random_inputs(graph, rng) for _ in range(2)])


def test_every_promised_builtin_is_covered(converted_models):
    kinds = {op.kind for model in converted_models.values() for op in ir.load(model).ops}
    kinds |= {op.kind for op in _quantize_chain_graph().ops}
    assert PROMISED_BUILTINS <= kinds, f"no test model uses {sorted(PROMISED_BUILTINS - kinds)}"
    assert PROMISED_BUILTINS <= set(KERNELS)


# ---------------------------------------------------------------- integer helpers

def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _round_half_away(value: Fraction) -> int:
    return int(math.copysign(_round_half_up(abs(value)), value))


def _multiply_by_quantized_multiplier_exact(x: int, multiplier: int, shift: int) -> int:
    """gemmlowp's double rounding restated with exact fractions: round(x * 2^left * m / 2^31)
    with ties upwards (saturating -1 * -1), then x / 2^right with ties away from zero."""
    a = x * (1 << max(shift, 0))
    a = (a + (1 << 31)) % (1 << 32) - (1 << 31)
    high = (1 << 31) - 1 if a == multiplier == -(1 << 31) else _round_half_up(Fraction(a * multiplier, 1 << 31))
    return _round_half_away(Fraction(high, 1 << max(-shift, 0)))


def test_multiply_by_quantized_multiplier_matches_exact_arithmetic():
    rng = np.random.default_rng(10)
    x = np.concatenate([rng.integers(-(1 << 31), 1 << 31, 3000), rng.integers(-300, 300, 3000),
                        [-(1 << 31), (1 << 31) - 1, 0, 1, -1]])
    multiplier = rng.integers(1 << 30, 1 << 31, x.size)
    shift = rng.integers(-31, 3, x.size)
    ours = q.multiply_by_quantized_multiplier(x, multiplier, shift)
    exact = [_multiply_by_quantized_multiplier_exact(int(a), int(m), int(s)) for a, m, s in zip(x, multiplier, shift)]
    assert ours.tolist() == exact


def test_quantize_multiplier_is_accurate_and_normalised():
    rng = np.random.default_rng(11)
    for real in np.concatenate([10.0 ** rng.uniform(-9, 3, 500), [1.0, 0.5, 1 - 2.0 ** -40]]):
        multiplier, shift = q.quantize_multiplier(real)
        assert (1 << 30) <= multiplier < (1 << 31)
        assert abs(multiplier * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -31
    assert q.quantize_multiplier(0.0) == (0, 0)
    assert q.quantize_multiplier(2.0 ** -40) == (0, 0)   # TFLM flushes shifts below -31 to zero
    with pytest.raises(UserError):
        q.quantize_multiplier(float("inf"))


# ---------------------------------------------------------------- executor behaviour

def _variable_graph() -> tuple:
    """y = x + v, where v is an int8 variable with zero point 5."""
    x = ir.Tensor("x", (1, 3), np.int8, quant=_quant(0.5, 0))
    v = ir.Tensor("v", (1, 3), np.int8, quant=_quant(0.5, 5), is_variable=True)
    y = ir.Tensor("y", (1, 3), np.int8, quant=_quant(0.5, 0))
    return ir.Graph([ir.Op("ADD", [x, v], [y], schema.AddOptionsT())], [x], [y], [x, v, y]), v


def test_variables_start_at_zero_point_update_in_place_and_reset():
    graph, v = _variable_graph()
    assert_matches_tflm(ir.emit(graph), [[np.array([[-7, 0, 3]], np.int8)]])   # TFLM's initial value too
    executor = Executor(graph)
    assert executor.value(v).tolist() == [[5, 5, 5]]
    live = executor.value(v)
    live[...] = 9
    out = executor.invoke([np.array([[0, 1, 2]], np.int8)])[0]
    assert out.tolist() == [[4, 5, 6]]      # x + (9 - 5): both scales are 0.5
    executor.reset()
    assert executor.value(v) is live and live.tolist() == [[5, 5, 5]]


def test_executor_reports_bad_inputs_and_unknown_ops():
    graph, _ = _variable_graph()
    executor = Executor(graph)
    with pytest.raises(UserError, match="must be int8"):
        executor.invoke([np.zeros((1, 3), np.float32)])
    with pytest.raises(UserError, match="has 1 inputs"):
        executor.invoke([])
    unknown = copy.copy(graph)
    unknown.ops = [ir.Op("TFLT_NO_SUCH_OP", graph.ops[0].inputs, graph.ops[0].outputs, custom=True)]
    with pytest.raises(UserError, match=r"no reference kernel for TFLT_NO_SUCH_OP \(op 0\)"):
        Executor(unknown).invoke([np.zeros((1, 3), np.int8)])
