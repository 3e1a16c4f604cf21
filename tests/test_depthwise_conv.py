"""TFLT_DEPTHWISE_CONV_2D's numpy reference and its converter helper against the stock
int8 DEPTHWISE_CONV_2D of the reference executor (tflm_train/reference/builtins.py,
bit-exact with TFLM), with and without a folded PAD. The same layers inside the
real TFLM interpreter: tests/test_micro_kernels_tflm.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from depthwise_cases import ACT, CASES, random_case, varied
from tflm_train import ir, tflm_runner
from tflm_train.converter.depthwise import explicit_depthwise_conv
from tflm_train.errors import UserError
from tflm_train.kernels_grad.depthwise_conv import depthwise_conv2d
from tflm_train.reference import KERNELS, Executor
from tflm_train.schema.training_ops_generated import DepthwiseConvOptions


def replacement(case):
    """(graph holding the new constants, the TFLT_DEPTHWISE_CONV_2D op) for a case."""
    graph = ir.Graph([], [], [], [])
    return graph, explicit_depthwise_conv(graph, case.op, case.pad, case.x)


def run_graph(ops, x, outputs, image) -> list:
    graph = ir.Graph(ops, [x], outputs, [])
    return Executor(graph).invoke([image])


@pytest.mark.parametrize("name", sorted(CASES))
def test_replacement_equals_stock_layer(name):
    rng = np.random.default_rng(sorted(CASES).index(name))
    case = random_case(rng, **CASES[name])
    _, op = replacement(case)
    assert op.kind == "TFLT_DEPTHWISE_CONV_2D" and op.inputs[0] is case.x and op.outputs == case.op.outputs
    for _ in range(3):
        image = case.image(rng)
        expected, = run_graph(case.ops, case.x, case.op.outputs, image)
        actual, = run_graph([op], case.x, op.outputs, image)
        np.testing.assert_array_equal(actual, expected)
        assert varied(actual)


@pytest.mark.parametrize("seed", range(24))
def test_reference_equals_stock_on_random_layers(seed):
    """Random kernels 3/5/7, strides 1/2, dilations 1/2, multipliers 1/2, SAME/VALID or an
    asymmetric PAD, fused activations, with and without bias."""
    rng = np.random.default_rng(100 + seed)
    case = random_case(rng, kernel=tuple(int(k) for k in rng.choice([3, 5, 7], size=2)),
                       strides=tuple(int(s) for s in rng.integers(1, 3, size=2)),
                       dilations=tuple(int(d) for d in rng.integers(1, 3, size=2)),
                       padding=str(rng.choice(["SAME", "VALID"])), explicit_pad=seed % 3 == 0,
                       depth_multiplier=int(rng.integers(1, 3)), bias=seed % 4 != 1,
                       activation=int(rng.choice([ACT.NONE, ACT.RELU, ACT.RELU6])))
    _, op = replacement(case)
    image = case.image(rng)
    expected, = run_graph(case.ops, case.x, case.op.outputs, image)
    options = DepthwiseConvOptions.from_bytes(op.custom_options)
    _, w, bias, multiplier, shift = (t.data if t is not None else None for t in op.inputs)
    actual = depthwise_conv2d(image, w, bias, multiplier, shift, output_height=expected.shape[1],
                              output_width=expected.shape[2], **vars(options))
    np.testing.assert_array_equal(actual, expected)


def test_zero_point_padding_equals_skipping():
    """Positions outside the input contribute nothing, which is padding with the zero point."""
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(1, 5, 4, 3)).astype(np.int8)
    w = rng.integers(-127, 128, size=(1, 3, 3, 6)).astype(np.int8)
    common = dict(multiplier=np.full(6, 1 << 30, np.int32), shift=np.full(6, -7, np.int32), bias=None,
                  output_height=3, output_width=2, stride_h=2, stride_w=2, x_zero_point=-9, y_zero_point=4,
                  depth_multiplier=2)
    padded = np.pad(x, [(0, 0), (2, 0), (1, 1), (0, 0)], constant_values=-9)
    explicit = depthwise_conv2d(x, w, pad_top=2, pad_left=1, **common)
    np.testing.assert_array_equal(explicit, depthwise_conv2d(padded, w, **common))
    assert (explicit != depthwise_conv2d(np.pad(x, [(0, 0), (2, 0), (1, 1), (0, 0)]), w, **common)).any()


def test_variable_weight_and_bias_are_kept():
    case = random_case(np.random.default_rng(4), kernel=(3, 3))
    w_var = ir.Tensor("w_var", case.op.inputs[1].shape, np.int8, quant=case.op.inputs[1].quant, is_variable=True)
    b_var = ir.Tensor("b_var", case.op.inputs[2].shape, np.int32, is_variable=True)
    case.op.inputs[1:] = [w_var, b_var]
    graph, op = replacement(case)
    assert op.inputs[1] is w_var and op.inputs[2] is b_var
    assert [t.name for t in graph.tensors] == ["dw/y/multiplier", "dw/y/shift"]
    assert all(t.is_constant and t.dtype == np.int32 for t in op.inputs[3:])


def test_helper_rejects_what_the_kernel_would():
    case = random_case(np.random.default_rng(5), kernel=(3, 3), strides=(2, 2), explicit_pad=True)
    graph = ir.Graph([], [], [], [])
    with pytest.raises(UserError, match="padding 3 does not fit"):
        explicit_depthwise_conv(graph, case.op, (3, 0), case.x)
    other = ir.Tensor("other", case.x.shape, np.int8, quant=ir.Quant(case.x.quant.scale * 2, case.x.quant.zero_point))
    with pytest.raises(UserError, match="must be int8 with the quantization"):
        explicit_depthwise_conv(graph, case.op, case.pad, other)
    with pytest.raises(UserError, match="takes a DEPTHWISE_CONV_2D"):
        explicit_depthwise_conv(graph, case.pad_op)


def test_reference_kernel_rejects_mismatched_channels():
    case = random_case(np.random.default_rng(6), depth_multiplier=2, channels=3)
    _, op = replacement(case)
    args = [case.image(np.random.default_rng(0))] + [t.data for t in op.inputs[1:]]
    args[1] = args[1][..., :3]
    with pytest.raises(UserError, match="do not fit depth_multiplier 2"):
        KERNELS["TFLT_DEPTHWISE_CONV_2D"](op, args)


def fold_depthwise_layers(graph: ir.Graph) -> ir.Graph:
    """Every DEPTHWISE_CONV_2D replaced through the helper, with the PAD feeding it folded
    (a stand-in for the converter pass)."""
    producers = graph.producers()
    replaced, folded = {}, set()
    for op in graph.ops:
        if op.kind != "DEPTHWISE_CONV_2D":
            continue
        pad_op = producers.get(id(op.inputs[0]))
        if pad_op is not None and pad_op.kind == "PAD":
            folded.add(id(pad_op))
            leading = tuple(int(p) for p in np.asarray(pad_op.inputs[1].data)[1:3, 0])
            replaced[id(op)] = explicit_depthwise_conv(graph, op, leading, pad_op.inputs[0])
        else:
            replaced[id(op)] = explicit_depthwise_conv(graph, op)
    graph.ops = [replaced.get(id(op), op) for op in graph.ops if id(op) not in folded]
    return graph


def pytorch_style_model() -> bytes:
    """An int8 classifier whose stride-2 depthwise is PAD (symmetric, as PyTorch pads) + VALID,
    then a SAME depthwise with depth multiplier 2: what the imported MCUNet/MobileNetV2 look like."""
    tf = pytest.importorskip("tensorflow")
    import tf_models
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    inp = tf.keras.Input((16, 16, 3), batch_size=1)
    x = layers.Conv2D(8, 3, padding="same", activation="relu6")(inp)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu6")(layers.ZeroPadding2D(1)(x))
    x = layers.Conv2D(8, 1, activation="relu6")(x)
    x = layers.DepthwiseConv2D(5, padding="same", depth_multiplier=2, activation="relu6")(x)
    x = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return tf_models.quantize(tf.keras.Model(inp, layers.Softmax()(x)), (16, 16, 3))


def test_folded_model_computes_the_original_outputs_in_tflm():
    model = pytorch_style_model()
    original = ir.load(model)
    kinds = [op.kind for op in original.ops]
    assert kinds.count("PAD") == 1 and kinds.count("DEPTHWISE_CONV_2D") == 2
    folded = fold_depthwise_layers(ir.load(model))
    assert [op.kind for op in folded.ops] == [k.replace("DEPTHWISE", "TFLT_DEPTHWISE") for k in kinds if k != "PAD"]
    layer_outputs = [op.outputs[0].name for op in original.ops if op.kind == "DEPTHWISE_CONV_2D"]
    rng = np.random.default_rng(0)
    images = [rng.integers(-128, 128, size=original.inputs[0].shape).astype(np.int8) for _ in range(3)]
    results = []
    for graph in (original, folded):
        names = [t.name for t in graph.referenced_tensors()]
        with tflm_runner.TflmSession(ir.emit(graph), preserve_all_tensors=True) as session:
            results.append([session.invoke([image]) + [session.tensor(names.index(n)) for n in layer_outputs]
                            for image in images])
    for expected, actual in zip(*results):
        for e, a in zip(expected, actual):
            np.testing.assert_array_equal(a, e)
        assert all(varied(a) for a in actual[1:])
