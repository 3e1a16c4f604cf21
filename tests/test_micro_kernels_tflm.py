"""The training kernels inside the stock TFLM interpreter (through the adapter):
TFLT_CONV_2D_SPLIT against TFLM's own CONV_2D / FULLY_CONNECTED,
TFLT_DEPTHWISE_CONV_2D against its DEPTHWISE_CONV_2D (with and without a folded
PAD), TFLT_CONV_CHAIN against the stock layers it fuses, one training step
(seeding, fused update, loss, inference mode) on variables, and
TFLT_ACTIVATION_MASK's packed mask read by a backward op.
"""
from __future__ import annotations

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.python import schema_py_generated as tfl

from chain_cases import CHAINS, random_chain
from depthwise_cases import CASES, random_case, varied
from tflm_train import ir, tflm_runner
from tflm_train.converter.depthwise import explicit_depthwise_conv
from tflm_train.kernels_grad import conv, mask as mask_ops, softmax_xent
from tflm_train.kernels_grad.depthwise_conv import depthwise_input_grad
from tflm_train.kernels_grad.common import F32
from tflm_train.reference.quantization import activation_range, quantize_multiplier
from tflm_train.schema import training_ops_generated as schema

S_X, X_ZP, S_Y, Y_ZP = 0.05, -4, 0.11, 6
H, W, I, O, K = 7, 6, 5, 3, 2


def requantization(s_w: np.ndarray) -> tuple:
    """Per-channel (multiplier, shift) exactly as TFLM derives them from the tensors' float32 scales."""
    pairs = [quantize_multiplier(float(F32(S_X)) * float(s) / float(F32(S_Y))) for s in s_w]
    return np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32)


def builtin_options(fully_connected: bool):
    if fully_connected:
        options = tfl.FullyConnectedOptionsT()
    else:
        options = tfl.Conv2DOptionsT()
        options.padding, options.strideH, options.strideW = tfl.Padding.SAME, 2, 1
        options.dilationHFactor, options.dilationWFactor = 1, 2
    options.fusedActivationFunction = tfl.ActivationFunctionType.RELU
    return options


@pytest.mark.parametrize("fully_connected", [False, True])
def test_split_conv_is_bit_identical_to_tflm(fully_connected):
    rng = np.random.default_rng(5)
    x_shape = (1, I) if fully_connected else (1, H, W, I)
    w_shape = (O, I) if fully_connected else (O, 3, 3, I)
    y_shape = (1, O) if fully_connected else (1, (H + 1) // 2, W, O)
    weight = rng.integers(-127, 128, size=w_shape).astype(np.int8)
    frozen = weight.copy()
    frozen[..., :K] = rng.integers(-127, 128, size=w_shape[:-1] + (K,))  # must be ignored: w_train wins
    s_w = (10.0 ** rng.uniform(-3, -2, size=O)).astype(F32)
    bias = rng.integers(-3000, 3000, size=O).astype(np.int32)
    multiplier, shift = requantization(s_w)
    act_min, act_max = activation_range(tfl.ActivationFunctionType.RELU, S_Y, Y_ZP)

    x = ir.Tensor("x", x_shape, np.int8, quant=ir.Quant(S_X, X_ZP))
    w = ir.Tensor("w", w_shape, np.int8, data=weight, quant=ir.Quant(s_w, np.zeros(O), 0))
    b = ir.Tensor("b", (O,), np.int32, data=bias, quant=ir.Quant(F32(S_X) * s_w, np.zeros(O), 0))
    y_builtin = ir.Tensor("y_builtin", y_shape, np.int8, quant=ir.Quant(S_Y, Y_ZP))
    builtin = ir.Op("FULLY_CONNECTED" if fully_connected else "CONV_2D", [x, w, b], [y_builtin],
                    options=builtin_options(fully_connected))

    window = {} if fully_connected else dict(stride_h=2, stride_w=1, dilation_h=1, dilation_w=2, pad_top=1,
                                             pad_left=2)
    options = schema.SplitConvOptions(**window, x_zero_point=X_ZP, y_zero_point=Y_ZP, act_min=act_min,
                                      act_max=act_max)
    split_inputs = [x, ir.Tensor("w_frozen", w_shape, np.int8, data=frozen),
                    ir.Tensor("w_train", w_shape[:-1] + (K,), np.int8, data=weight[..., :K]),
                    b, ir.Tensor("multiplier", (O,), np.int32, data=multiplier),
                    ir.Tensor("shift", (O,), np.int32, data=shift)]
    y_split = ir.Tensor("y_split", y_shape, np.int8, quant=ir.Quant(S_Y, Y_ZP))
    split = ir.Op("TFLT_CONV_2D_SPLIT", split_inputs, [y_split], custom_options=options.to_bytes(), custom=True)

    tensors = [x, w, b, y_builtin, *split_inputs[1:3], *split_inputs[4:], y_split]
    model = ir.emit(ir.Graph([builtin, split], [x], [y_builtin, y_split], tensors))
    images = [rng.integers(-128, 128, size=x_shape).astype(np.int8) for _ in range(3)]
    with tflm_runner.TflmSession(model) as session:
        results = [session.invoke([image]) for image in images]
    for expected, actual in results:
        np.testing.assert_array_equal(actual, expected)
    assert len(np.unique([actual for _, actual in results])) > 3  # real outputs, not clamped constants


def graph_of(ops: list, inputs: list, outputs: list) -> ir.Graph:
    tensors = {id(t): t for op in ops for t in op.inputs + op.outputs if t is not None}
    return ir.Graph(ops, inputs, outputs, list(tensors.values()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_depthwise_conv_is_bit_identical_to_tflm(name):
    """The stock layer (after its PAD, if any) and our op built by the converter helper
    read the same image; a variable-weight variant has TFLT_TRAIN_INIT seed the weight and
    bias variables our op reads from the stock layer's constants."""
    rng = np.random.default_rng(40 + sorted(CASES).index(name))
    case = random_case(rng, **CASES[name])
    graph = ir.Graph([], [], [], [])
    ours = explicit_depthwise_conv(graph, case.op, case.pad, case.x)
    y = case.op.outputs[0]
    ours.outputs = [ir.Tensor("ours", y.shape, y.dtype, quant=y.quant)]
    ops, inputs = case.ops + [ours], [case.x]
    variables = sorted(CASES).index(name) % 2 == 1
    if variables:
        label, state = ir.Tensor("label", (1,), np.int32), ir.Tensor("state", (2,), np.int32, is_variable=True)
        init_inputs = [label, state]
        for i, t in enumerate(ours.inputs[1:3], start=1):
            if t is not None:
                ours.inputs[i] = ir.Tensor(f"{t.name}/variable", t.shape, t.dtype, quant=t.quant, is_variable=True)
                init_inputs += [t, ours.inputs[i]]
        ops = [ir.Op("TFLT_TRAIN_INIT", init_inputs, [], custom_options=schema.TrainInitOptions().to_bytes(),
                     custom=True)] + ops
        inputs = [case.x, label]
    model = ir.emit(graph_of(ops, inputs, [y, ours.outputs[0]]))
    with tflm_runner.TflmSession(model) as session:
        for _ in range(3):
            image = case.image(rng)
            expected, actual = session.invoke([image, np.array([0], np.int32)] if variables else [image])
            np.testing.assert_array_equal(actual, expected)
            assert varied(actual)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_conv_chain_is_bit_identical_to_tflm(name):
    """The stock layers (TFLM's reference kernels, PADs included) and our chain of them, built by
    the converter, read the same image."""
    rng = np.random.default_rng(60 + sorted(CHAINS).index(name))
    layers, size = CHAINS[name]
    chain = random_chain(rng, layers, *size)
    graph = chain.graph()
    ours = chain.chain_op(graph)
    y = chain.y
    ours.outputs[0] = ir.Tensor("ours", y.shape, y.dtype, quant=y.quant)
    model = ir.emit(graph_of(chain.ops + [ours], [chain.x], [y, ours.outputs[0]]))
    with tflm_runner.TflmSession(model) as session:
        for _ in range(2):
            expected, actual = session.invoke([chain.image(rng)])
            np.testing.assert_array_equal(actual, expected)
            assert varied(actual)


def training_step_model():
    """label, lr, x, dy, logits in; TRAIN_INIT seeds w_train / b_train, TFLT_CONV_GRAD_UPDATE
    trains them (no fused activation), TFLT_SOFTMAX_XENT gives loss and dlogits."""
    rng = np.random.default_rng(11)
    t = dict(
        label=ir.Tensor("label", (1,), np.int32), lr=ir.Tensor("lr", (1,), np.float32),
        x=ir.Tensor("x", (1, 5, 6, I), np.int8), dy=ir.Tensor("dy", (1, 3, 3, O), np.float32),
        logits=ir.Tensor("logits", (1, 10), np.int8),
        state=ir.Tensor("state", (2,), np.int32, is_variable=True),
        w_src=ir.Tensor("w_src", (O, 3, 3, I), np.int8, data=rng.integers(-127, 128, size=(O, 3, 3, I))),
        w_train=ir.Tensor("w_train", (O, 3, 3, K), np.int8, is_variable=True),
        b_src=ir.Tensor("b_src", (O,), np.int32, data=rng.integers(-5000, 5000, size=O)),
        b_train=ir.Tensor("b_train", (O,), np.int32, is_variable=True),
        qas=ir.Tensor("qas", (O,), np.float32, data=(10.0 ** rng.uniform(1, 3, size=O)).astype(F32)),
        loss=ir.Tensor("loss", (1,), np.float32), dlogits=ir.Tensor("dlogits", (1, 10), np.float32),
    )
    update_options = schema.ConvUpdateOptions(stride_h=2, stride_w=2, pad_top=1, pad_left=1, x_zero_point=X_ZP,
                                              x_scale=S_X, rounding=schema.Rounding.STOCHASTIC,
                                              weight_param_id=1, bias_param_id=2)
    ops = [
        ir.Op("TFLT_TRAIN_INIT", [t["label"], t["state"], t["w_src"], t["w_train"], t["b_src"], t["b_train"]], [],
              custom_options=schema.TrainInitOptions().to_bytes(), custom=True),
        ir.Op("TFLT_CONV_GRAD_UPDATE", [t["label"], t["lr"], t["state"], t["dy"], None, t["x"], t["w_train"],
                                        t["qas"], t["b_train"], t["qas"]], [],
              custom_options=update_options.to_bytes(), custom=True),
        ir.Op("TFLT_SOFTMAX_XENT", [t["logits"], t["label"]], [t["loss"], t["dlogits"]],
              custom_options=schema.SoftmaxXentOptions(logits_scale=0.25, logits_zero_point=3).to_bytes(),
              custom=True),
    ]
    inputs = [t[name] for name in ("label", "lr", "x", "dy", "logits")]
    graph = ir.Graph(ops, inputs, [t["loss"], t["dlogits"]], list(t.values()))
    return graph, t, update_options


def test_training_step_in_tflm():
    graph, t, options = training_step_model()
    index = {name: graph.referenced_tensors().index(tensor) for name, tensor in t.items()}
    rng = np.random.default_rng(12)
    x = rng.integers(-128, 128, size=t["x"].shape).astype(np.int8)
    dy = rng.standard_normal(t["dy"].shape).astype(F32)
    logits = rng.integers(-128, 128, size=t["logits"].shape).astype(np.int8)
    lr = np.array([0.4], F32)
    w_expected, b_expected = t["w_src"].data[..., :K].copy(), t["b_src"].data.copy()
    conv.conv_grad_update(lr[0], 1, dy, None, x, w_expected, t["qas"].data, b_expected, t["qas"].data,
                          **{field.name: getattr(options, field.name) for field in options.FIELDS})
    with tflm_runner.TflmSession(ir.emit(graph), preserve_all_tensors=True) as session:
        loss, dlogits = session.invoke([np.array([7], np.int32), lr, x, dy, logits])
        assert session.tensor(index["state"]).tolist() == [1, 1]
        np.testing.assert_array_equal(session.tensor(index["w_train"]), w_expected)
        np.testing.assert_array_equal(session.tensor(index["b_train"]), b_expected)
        assert (w_expected != t["w_src"].data[..., :K]).any()
        expected_loss, expected_dlogits = softmax_xent.softmax_xent(logits, 7, logits_scale=0.25,
                                                                    logits_zero_point=3)
        np.testing.assert_array_equal(dlogits, expected_dlogits)
        np.testing.assert_allclose(loss[0], expected_loss, rtol=1e-5)

        loss, _ = session.invoke([np.array([-1], np.int32), lr, x, dy, logits])  # inference: no training
        assert loss[0] == 0.0
        assert session.tensor(index["state"]).tolist() == [1, 1]
        np.testing.assert_array_equal(session.tensor(index["w_train"]), w_expected)
        np.testing.assert_array_equal(session.tensor(index["b_train"]), b_expected)


def test_packed_activation_mask_in_tflm():
    """TFLT_ACTIVATION_MASK's uint8 output through the adapter, and a depthwise input gradient
    reading it gives the one reading the int8 activation, bit for bit."""
    rng = np.random.default_rng(13)
    c, m, act_min, act_max = 3, 2, -20, 100
    y = ir.Tensor("y", (1, 3, 3, c * m), np.int8)
    packed = ir.Tensor("y/mask", ((y.size + 7) // 8,), np.uint8)
    label, dy = ir.Tensor("label", (1,), np.int32), ir.Tensor("dy", y.shape, np.float32)
    w = ir.Tensor("w", (1, 3, 3, c * m), np.int8, data=rng.integers(-127, 128, size=(1, 3, 3, c * m)))
    w_scale = ir.Tensor("w_scale", (c * m,), np.float32, data=rng.uniform(0.001, 0.01, size=c * m))
    grad_options = schema.ConvGradOptions(stride_h=2, stride_w=2, pad_top=1, pad_left=1, input_height=6,
                                          input_width=5, input_channels=c, depth_multiplier=m, act_min=act_min,
                                          act_max=act_max)
    dx = [ir.Tensor(f"dx_{form}", (1, 6, 5, c), np.float32) for form in ("int8", "packed")]
    ops = [ir.Op("TFLT_ACTIVATION_MASK", [y], [packed], custom=True,
                 custom_options=schema.ActivationMaskOptions(act_min=act_min, act_max=act_max).to_bytes())]
    ops += [ir.Op("TFLT_DEPTHWISE_INPUT_GRAD", [label, dy, mask, w, w_scale], [out], custom=True,
                  custom_options=grad_options.to_bytes()) for mask, out in zip((y, packed), dx)]
    y_value = rng.integers(-128, 128, size=y.shape).astype(np.int8)
    dy_value = rng.standard_normal(dy.shape).astype(F32)
    with tflm_runner.TflmSession(ir.emit(graph_of(ops, [y, dy, label], [packed, *dx]))) as session:
        bits, dx_int8, dx_packed = session.invoke([y_value, dy_value, np.array([0], np.int32)])
    np.testing.assert_array_equal(bits, mask_ops.pack_activation_mask(y_value, act_min=act_min, act_max=act_max))
    np.testing.assert_array_equal(dx_packed, dx_int8)
    expected = depthwise_input_grad(dy_value, y_value, w.data, w_scale.data, stride_h=2, stride_w=2, pad_top=1,
                                    pad_left=1, input_height=6, input_width=5, input_channels=c, depth_multiplier=m,
                                    act_min=act_min, act_max=act_max)
    np.testing.assert_array_equal(dx_int8, expected)
    assert 0 < (bits != 0).sum() and (dx_int8 != 0).any()
