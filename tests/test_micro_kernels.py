"""The micro kernels (micro/kernels) through Init / Prepare / Eval with a fake
KernelContext (tests/cc/kernel_shim.cc): options parsing, input order, shape
validation in Prepare, inference mode, and results equal to the numpy reference.
"""
from __future__ import annotations

import ctypes
import dataclasses

import flatbuffers
import numpy as np
import pytest

from chain_cases import CHAINS, chain_parameters, random_chain
from depthwise_cases import varied
from micro_build import CORE_SOURCES, KERNEL_SOURCES, REPO, build_library, ptr
from tflm_train.kernels_grad import conv, mask, mean, softmax_xent, update
from tflm_train.kernels_grad.conv_chain import conv_chain
from tflm_train.kernels_grad.common import F32
from tflm_train.kernels_grad.depthwise_conv import depthwise_conv2d, depthwise_input_grad
from tflm_train.reference.quantization import quantize_multiplier
from tflm_train.schema import training_ops_generated as schema

OK, NO_SUCH_OP, INIT_FAILED, PREPARE_FAILED, EVAL_FAILED = range(5)
DTYPES = {np.dtype(np.float32): 0, np.dtype(np.int32): 1, np.dtype(np.int8): 2, np.dtype(np.uint8): 3}
OTHER_DTYPE = 4
MAX_RANK = 6


class ShimTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("type", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("dims", ctypes.c_int32 * MAX_RANK), ("present", ctypes.c_int32), ("constant", ctypes.c_int32)]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro_kernels") / "kernel_shim.so"
    P, I = ctypes.c_void_p, ctypes.c_int
    signatures = {"shim_run_op": ([ctypes.c_char_p, P, I, P, I, P, I, P, I], I)}
    return build_library([REPO / "tests" / "cc" / "kernel_shim.cc", *KERNEL_SOURCES, *CORE_SOURCES], out,
                         signatures)


@dataclasses.dataclass
class Const:
    """A constant tensor: its data is visible at Prepare."""
    array: np.ndarray


def shim_tensor(value) -> ShimTensor:
    t = ShimTensor()
    if value is None:
        return t  # absent optional input
    array = value.array if isinstance(value, Const) else value
    t.data = ptr(array)
    t.type = DTYPES.get(array.dtype, OTHER_DTYPE)
    t.rank = array.ndim
    t.dims[:array.ndim] = array.shape
    t.present = 1
    t.constant = int(isinstance(value, Const))
    return t


@dataclasses.dataclass
class Call:
    """One op invocation: custom code, options table, inputs (None = absent), outputs."""
    op: str
    options: object
    inputs: list
    outputs: list

    def run(self, kernels) -> tuple:
        options = self.options if isinstance(self.options, bytes) else self.options.to_bytes()
        inputs = (ShimTensor * max(1, len(self.inputs)))(*map(shim_tensor, self.inputs))
        outputs = (ShimTensor * max(1, len(self.outputs)))(*map(shim_tensor, self.outputs))
        message = ctypes.create_string_buffer(1024)
        code = kernels.shim_run_op(self.op.encode(), options, len(options), ctypes.addressof(inputs),
                                   len(self.inputs), ctypes.addressof(outputs), len(self.outputs),
                                   ctypes.addressof(message), len(message))
        return code, message.value.decode()


def run_ok(kernels, call: Call) -> None:
    code, message = call.run(kernels)
    assert code == OK, message


def label(value: int) -> np.ndarray:
    return np.array([value], np.int32)


def nan_filled(shape) -> np.ndarray:
    return np.full(shape, np.nan, F32)


# ---------------------------------------------------------------- one layer and its ops

RNG_SEED = 7
# 5x6 input, 3x3 kernel, stride 2, SAME: 3x3 output, pads (1, 1).
WINDOW = dict(stride_h=2, stride_w=2, pad_top=1, pad_left=1)
H, W, I, O, K = 5, 6, 3, 5, 2
HO, WO = 3, 3
ACT_MIN, ACT_MAX = -20, 127


@dataclasses.dataclass
class Layer:
    x: np.ndarray
    w: np.ndarray
    w_train: np.ndarray
    w_scale: np.ndarray
    dy: np.ndarray
    y: np.ndarray
    b_train: np.ndarray
    qas: np.ndarray


def make_layer(fully_connected: bool = False) -> Layer:
    rng = np.random.default_rng(RNG_SEED)
    spatial = () if fully_connected else (3, 3)
    image = (1, I) if fully_connected else (1, H, W, I)
    out = (1, O) if fully_connected else (1, HO, WO, O)
    return Layer(
        x=rng.integers(-128, 128, size=image).astype(np.int8),
        w=rng.integers(-127, 128, size=(O, *spatial, I)).astype(np.int8),
        w_train=rng.integers(-127, 128, size=(O, *spatial, K)).astype(np.int8),
        w_scale=(10.0 ** rng.uniform(-3, -1, size=O)).astype(F32),
        dy=rng.standard_normal(out).astype(F32),
        y=rng.integers(-128, 128, size=out).astype(np.int8),
        b_train=rng.integers(-1000, 1000, size=O).astype(np.int32),
        qas=(10.0 ** rng.uniform(1, 3, size=O)).astype(F32),
    )


def update_options(**overrides) -> schema.ConvUpdateOptions:
    values = dict(WINDOW, x_zero_point=-3, x_scale=0.02, act_min=ACT_MIN, act_max=ACT_MAX,
                  rounding=schema.Rounding.STOCHASTIC, weight_param_id=4, bias_param_id=5)
    values.update(overrides)
    return schema.ConvUpdateOptions(**values)


def conv_input_grad_call(layer: Layer, fully_connected: bool = False) -> Call:
    options = schema.ConvGradOptions(**({} if fully_connected else WINDOW), input_height=1 if fully_connected else H,
                                     input_width=1 if fully_connected else W, input_channels=I,
                                     act_min=ACT_MIN, act_max=ACT_MAX)
    return Call("TFLT_CONV_INPUT_GRAD", options,
                [label(1), layer.dy, layer.y, Const(layer.w), layer.w_train, Const(layer.w_scale)],
                [nan_filled(layer.x.shape)])


def conv_grad_update_call(layer: Layer, fully_connected: bool = False) -> Call:
    options = update_options(**({"stride_h": 1, "stride_w": 1, "pad_top": 0, "pad_left": 0}
                                if fully_connected else {}))
    return Call("TFLT_CONV_GRAD_UPDATE", options,
                [label(2), np.array([0.3], F32), np.array([1, 9], np.int32), layer.dy, layer.y, layer.x,
                 layer.w_train, Const(layer.qas), layer.b_train, Const(layer.qas)], [])


def conv_weight_grad_call(layer: Layer) -> Call:
    return Call("TFLT_CONV_WEIGHT_GRAD", update_options(), [label(0), layer.dy, layer.y, layer.x],
                [nan_filled(layer.w_train.shape)])


def bias_grad_call(layer: Layer) -> Call:
    return Call("TFLT_BIAS_GRAD", update_options(), [label(0), layer.dy, layer.y], [nan_filled(O)])


def sgd_update_call(layer: Layer) -> Call:
    grad = np.random.default_rng(1).standard_normal(layer.w_train.shape).astype(F32)
    return Call("TFLT_SGD_UPDATE", schema.SgdUpdateOptions(rounding=schema.Rounding.STOCHASTIC, param_id=3),
                [label(0), np.array([0.5], F32), np.array([1, 2], np.int32), grad, layer.w_train,
                 Const(layer.qas)], [])


def split_conv_call(layer: Layer, fully_connected: bool = False) -> Call:
    pairs = [quantize_multiplier(0.05 * float(s) / 0.1) for s in layer.w_scale]
    multiplier = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    options = schema.SplitConvOptions(**({} if fully_connected else WINDOW), x_zero_point=-3, y_zero_point=4,
                                      act_min=ACT_MIN, act_max=ACT_MAX)
    return Call("TFLT_CONV_2D_SPLIT", options,
                [layer.x, Const(layer.w), layer.w_train, Const(layer.b_train), Const(multiplier), Const(shift)],
                [np.zeros(layer.y.shape, np.int8)])


def depthwise_conv_call(multiplier: int = 2, w_variable: bool = False) -> Call:
    """I*multiplier output channels; the weight a variable (no data at Prepare) or a constant."""
    rng = np.random.default_rng(RNG_SEED)
    c = I * multiplier
    w = rng.integers(-127, 128, size=(1, 3, 3, c)).astype(np.int8)
    pairs = [quantize_multiplier(0.05 * float(s) / 0.3) for s in 10.0 ** rng.uniform(-3, -1, size=c)]
    options = schema.DepthwiseConvOptions(**WINDOW, x_zero_point=-3, y_zero_point=4, act_min=ACT_MIN,
                                          act_max=ACT_MAX, depth_multiplier=multiplier)
    return Call("TFLT_DEPTHWISE_CONV_2D", options,
                [rng.integers(-128, 128, size=(1, H, W, I)).astype(np.int8), w if w_variable else Const(w),
                 rng.integers(-1000, 1000, size=c).astype(np.int32),
                 Const(np.array([m for m, _ in pairs], np.int32)), Const(np.array([s for _, s in pairs], np.int32))],
                [np.zeros((1, HO, WO, c), np.int8)])


def depthwise_input_grad_call(multiplier: int = 2) -> Call:
    rng = np.random.default_rng(RNG_SEED)
    c = I * multiplier
    options = schema.ConvGradOptions(**WINDOW, input_height=H, input_width=W, input_channels=I,
                                     depth_multiplier=multiplier, act_min=ACT_MIN, act_max=ACT_MAX)
    return Call("TFLT_DEPTHWISE_INPUT_GRAD", options,
                [label(0), rng.standard_normal((1, HO, WO, c)).astype(F32),
                 rng.integers(-128, 128, size=(1, HO, WO, c)).astype(np.int8),
                 Const(rng.integers(-127, 128, size=(1, 3, 3, c)).astype(np.int8)),
                 Const((10.0 ** rng.uniform(-3, -1, size=c)).astype(F32))],
                [nan_filled((1, H, W, I))])


def conv_chain_call() -> Call:
    """MCUNet's first layers (stem, depthwise, projection, expansion, stride-2 depthwise, projection)
    on a 9x9x3 image: 6 stages, 25 inputs."""
    rng = np.random.default_rng(RNG_SEED)
    chain = random_chain(rng, CHAINS["mcunet_head"][0], 9, 9, 3)
    op = chain.chain_op(chain.graph())
    stages, parameters = chain_parameters(op)
    inputs = [chain.image(rng)] + [None if a is None else Const(a) for arrays in parameters for a in arrays]
    return Call("TFLT_CONV_CHAIN", schema.ConvChainOptions(stages=stages), inputs,
                [np.zeros(chain.y.shape, np.int8), np.full(op.outputs[1].shape, 0x5A, np.int8)])


def softmax_xent_call(classes: int = 10, label_value: int = 3) -> Call:
    logits = np.random.default_rng(RNG_SEED).integers(-128, 128, size=(1, classes)).astype(np.int8)
    return Call("TFLT_SOFTMAX_XENT", schema.SoftmaxXentOptions(logits_scale=0.0625, logits_zero_point=-5),
                [logits, label(label_value)], [np.zeros(1, F32), nan_filled((1, classes))])


def mean_grad_call() -> Call:
    return Call("TFLT_MEAN_GRAD", schema.MeanGradOptions(input_height=3, input_width=4),
                [label(0), np.arange(1, 8, dtype=F32).reshape(1, 7)], [nan_filled((1, 3, 4, 7))])


def activation_mask_call(shape=(1, HO, WO, O), act_min: int = ACT_MIN, act_max: int = ACT_MAX) -> Call:
    y = np.random.default_rng(RNG_SEED).integers(-128, 128, size=shape).astype(np.int8)
    # All ones: the op must clear the bits past the last element.
    return Call("TFLT_ACTIVATION_MASK", schema.ActivationMaskOptions(act_min=act_min, act_max=act_max), [y],
                [np.full((y.size + 7) // 8, 0xFF, np.uint8)])


def train_init_call(label_value: int = 0) -> Call:
    src_w = np.arange(-30, 30, dtype=np.int8).reshape(5, 2, 2, 3)
    src_b = np.arange(5, dtype=np.int32) * 1000
    return Call("TFLT_TRAIN_INIT", schema.TrainInitOptions(),
                [label(label_value), np.zeros(2, np.int32), Const(src_w), np.zeros((5, 2, 2, 2), np.int8),
                 Const(src_b), np.zeros(5, np.int32)], [])


# ---------------------------------------------------------------- results equal the numpy reference

@pytest.mark.parametrize("fully_connected", [False, True])
def test_conv_input_grad_kernel(kernels, fully_connected):
    layer = make_layer(fully_connected)
    call = conv_input_grad_call(layer, fully_connected)
    run_ok(kernels, call)
    expected = conv.conv_input_grad(layer.dy, layer.y, layer.w, layer.w_train, layer.w_scale,
                                    **({} if fully_connected else WINDOW),
                                    input_height=1 if fully_connected else H,
                                    input_width=1 if fully_connected else W, input_channels=I,
                                    act_min=ACT_MIN, act_max=ACT_MAX)
    np.testing.assert_array_equal(call.outputs[0], expected.reshape(layer.x.shape))


def test_depthwise_input_grad_kernel(kernels):
    call = depthwise_input_grad_call()
    run_ok(kernels, call)
    _, dy, y, w, w_scale = call.inputs
    expected = depthwise_input_grad(dy, y, w.array, w_scale.array, **WINDOW, input_height=H, input_width=W,
                                    input_channels=I, depth_multiplier=2, act_min=ACT_MIN, act_max=ACT_MAX)
    np.testing.assert_array_equal(call.outputs[0], expected)


def test_mean_grad_kernel(kernels):
    call = mean_grad_call()
    run_ok(kernels, call)
    np.testing.assert_array_equal(call.outputs[0], mean.mean_grad(call.inputs[1], input_height=3, input_width=4))


def test_softmax_xent_kernel(kernels):
    call = softmax_xent_call()
    run_ok(kernels, call)
    loss, dlogits = softmax_xent.softmax_xent(call.inputs[0], 3, logits_scale=0.0625, logits_zero_point=-5)
    np.testing.assert_array_equal(call.outputs[1], dlogits)
    np.testing.assert_allclose(call.outputs[0][0], loss, rtol=1e-5)


@pytest.mark.parametrize("fully_connected", [False, True])
def test_conv_grad_update_kernel(kernels, fully_connected):
    layer = make_layer(fully_connected)
    call = conv_grad_update_call(layer, fully_connected)
    w_expected, b_expected = layer.w_train.copy(), layer.b_train.copy()
    run_ok(kernels, call)
    options = dataclasses.asdict(call.options)
    conv.conv_grad_update(F32(0.3), 9, layer.dy, layer.y, layer.x, w_expected, layer.qas, b_expected, layer.qas,
                          **options)
    np.testing.assert_array_equal(layer.w_train, w_expected)
    np.testing.assert_array_equal(layer.b_train, b_expected)
    assert (layer.w_train != make_layer(fully_connected).w_train).any()


def test_depthwise_grad_update_kernel(kernels):
    depthwise = depthwise_input_grad_call(multiplier=2)
    _, dy, y, w, _ = depthwise.inputs
    x = np.random.default_rng(3).integers(-128, 128, size=(1, H, W, I)).astype(np.int8)
    w_train = w.array.copy()
    qas = np.full(2 * I, 300.0, F32)
    expected = w_train.copy()
    call = Call("TFLT_CONV_GRAD_UPDATE", update_options(depthwise=True, depth_multiplier=2),
                [label(0), np.array([0.5], F32), np.array([1, 4], np.int32), dy, y, x, w_train, Const(qas)], [])
    run_ok(kernels, call)
    conv.conv_grad_update(F32(0.5), 4, dy, y, x, expected, qas, None, None,
                          **dataclasses.asdict(call.options))
    np.testing.assert_array_equal(w_train, expected)


def test_conventional_schedule_kernels(kernels):
    layer = make_layer()
    dw_call, db_call = conv_weight_grad_call(layer), bias_grad_call(layer)
    run_ok(kernels, dw_call)
    run_ok(kernels, db_call)
    options = dataclasses.asdict(update_options())
    expected_dw = conv.conv_weight_grad(layer.dy, layer.y, layer.x, weight_shape=layer.w_train.shape,
                                        **{k: options[k] for k in conv._WEIGHT_GRAD_FIELDS})
    np.testing.assert_array_equal(dw_call.outputs[0], expected_dw)
    np.testing.assert_array_equal(db_call.outputs[0], conv.bias_grad(layer.dy, layer.y, act_min=ACT_MIN,
                                                                     act_max=ACT_MAX))
    sgd = sgd_update_call(layer)
    sgd.inputs[3] = dw_call.outputs[0]
    expected = layer.w_train.copy()
    run_ok(kernels, sgd)
    update.sgd_update(dw_call.outputs[0], expected, layer.qas, F32(0.5), 2, rounding=schema.Rounding.STOCHASTIC,
                      param_id=3)
    np.testing.assert_array_equal(layer.w_train, expected)


def random_fraction(shape) -> np.ndarray:
    return np.random.default_rng(8).integers(-128, 128, size=shape).astype(np.int8)


@pytest.mark.parametrize("rounding", [schema.Rounding.NEAREST, schema.Rounding.STOCHASTIC])
def test_sgd_update_with_fraction_kernel(kernels, rounding):
    layer = make_layer()
    call = sgd_update_call(layer)
    call.options = schema.SgdUpdateOptions(rounding=rounding, param_id=3)
    call.inputs[1] = np.array([0.001], F32)   # most steps below one LSB: they must accumulate
    fraction = random_fraction(layer.w_train.shape)
    call.inputs.append(fraction)
    w_expected, fraction_expected = layer.w_train.copy(), fraction.copy()
    run_ok(kernels, call)
    update.sgd_update(call.inputs[3], w_expected, layer.qas, F32(0.001), 2, rounding=rounding, param_id=3,
                      fraction=fraction_expected)
    np.testing.assert_array_equal(layer.w_train, w_expected)
    np.testing.assert_array_equal(fraction, fraction_expected)
    assert (fraction != random_fraction(fraction.shape)).mean() > 0.5


@pytest.mark.parametrize("kind", ["conv", "fully_connected", "depthwise"])
def test_conv_grad_update_with_fraction_kernel(kernels, kind):
    if kind == "depthwise":
        _, dy, y, w, _ = depthwise_input_grad_call(multiplier=2).inputs
        x = np.random.default_rng(3).integers(-128, 128, size=(1, H, W, I)).astype(np.int8)
        w_train, qas, b_train = w.array.copy(), np.full(2 * I, 3.0, F32), None
        options = update_options(depthwise=True, depth_multiplier=2)
    else:
        layer = make_layer(kind == "fully_connected")
        dy, y, x, w_train, qas, b_train = layer.dy, layer.y, layer.x, layer.w_train, layer.qas, layer.b_train
        options = conv_grad_update_call(layer, kind == "fully_connected").options
    fraction = random_fraction(w_train.shape)
    lr = F32(0.003)
    call = Call("TFLT_CONV_GRAD_UPDATE", options,
                [label(0), np.array([lr], F32), np.array([1, 4], np.int32), dy, y, x, w_train, Const(qas),
                 b_train, None if b_train is None else Const(qas), fraction], [])
    w_expected, fraction_expected = w_train.copy(), fraction.copy()
    b_expected = None if b_train is None else b_train.copy()
    run_ok(kernels, call)
    conv.conv_grad_update(lr, 4, dy, y, x, w_expected, qas, b_expected, qas, **dataclasses.asdict(options),
                          w_fraction=fraction_expected)
    np.testing.assert_array_equal(w_train, w_expected)
    np.testing.assert_array_equal(fraction, fraction_expected)
    if b_train is not None:
        np.testing.assert_array_equal(b_train, b_expected)
    assert (fraction != random_fraction(fraction.shape)).mean() > 0.3


@pytest.mark.parametrize("fully_connected", [False, True])
def test_split_conv_kernel(kernels, fully_connected):
    layer = make_layer(fully_connected)
    call = split_conv_call(layer, fully_connected)
    run_ok(kernels, call)
    x, w, w_train, bias, multiplier, shift = (getattr(v, "array", v) for v in call.inputs)
    expected = conv.conv2d_split(x, w, w_train, bias, multiplier, shift, output_height=1 if fully_connected else HO,
                                 output_width=1 if fully_connected else WO, **({} if fully_connected else WINDOW),
                                 x_zero_point=-3, y_zero_point=4, act_min=ACT_MIN, act_max=ACT_MAX)
    np.testing.assert_array_equal(call.outputs[0], expected.reshape(call.outputs[0].shape))


@pytest.mark.parametrize("multiplier, w_variable, bias", [(1, False, True), (2, True, True), (2, False, False)])
def test_depthwise_conv_kernel(kernels, multiplier, w_variable, bias):
    call = depthwise_conv_call(multiplier, w_variable)
    if not bias:
        call.inputs[2] = None
    run_ok(kernels, call)
    x, w, b, m, shift = (getattr(v, "array", v) for v in call.inputs)
    expected = depthwise_conv2d(x, w, b, m, shift, output_height=HO, output_width=WO, **WINDOW, x_zero_point=-3,
                                y_zero_point=4, act_min=ACT_MIN, act_max=ACT_MAX, depth_multiplier=multiplier)
    np.testing.assert_array_equal(call.outputs[0], expected)
    assert len(np.unique(expected)) > 10


@pytest.mark.parametrize("bias", [True, False])
def test_conv_chain_kernel(kernels, bias):
    call = conv_chain_call()
    if not bias:
        call.inputs[2::4] = [None] * 6
    run_ok(kernels, call)
    parameters = [[getattr(v, "array", v) for v in call.inputs[i:i + 4]] for i in range(1, 25, 4)]
    expected = conv_chain(call.inputs[0], parameters, call.options.stages)
    np.testing.assert_array_equal(call.outputs[0], expected)
    assert varied(expected)


@pytest.mark.parametrize("shape, act_min, act_max", [
    ((1, HO, WO, O), ACT_MIN, ACT_MAX),     # 45 elements: a partial last byte
    ((1, 16), -128, 127),
    ((7,), -128, 127),                      # less than a byte
    ((2, 3, 4), 5, 5),                      # any shape; an empty range passes nothing
])
def test_activation_mask_kernel(kernels, shape, act_min, act_max):
    call = activation_mask_call(shape, act_min, act_max)
    run_ok(kernels, call)
    expected = mask.pack_activation_mask(call.inputs[0], act_min=act_min, act_max=act_max)
    np.testing.assert_array_equal(call.outputs[0], expected)


# (call builder, index of its y input): every op that masks its gradient with y.
MASKED_CALLS = {
    "conv_input_grad": (lambda: conv_input_grad_call(make_layer()), 2),
    "fc_input_grad": (lambda: conv_input_grad_call(make_layer(True), True), 2),
    "depthwise_input_grad": (depthwise_input_grad_call, 2),
    "conv_weight_grad": (lambda: conv_weight_grad_call(make_layer()), 2),
    "bias_grad": (lambda: bias_grad_call(make_layer()), 2),
    "conv_grad_update": (lambda: conv_grad_update_call(make_layer()), 4),
    "fc_grad_update": (lambda: conv_grad_update_call(make_layer(True), True), 4),
}


def with_packed_mask(kernels, call: Call, y_index: int) -> Call:
    """`call` reading its y's packed mask, as TFLT_ACTIVATION_MASK computes it, instead of y."""
    y = call.inputs[y_index]
    pack = Call("TFLT_ACTIVATION_MASK", schema.ActivationMaskOptions(act_min=call.options.act_min,
                                                                     act_max=call.options.act_max),
                [y], [np.zeros((y.size + 7) // 8, np.uint8)])
    run_ok(kernels, pack)
    call.inputs[y_index] = pack.outputs[0]
    return call


def results(call: Call) -> list:
    """Outputs and every input array after a run (updates happen in place)."""
    return [np.copy(getattr(v, "array", v)) for v in call.outputs + call.inputs if v is not None]


@pytest.mark.parametrize("case", sorted(MASKED_CALLS))
def test_packed_mask_gives_the_int8_y_results(kernels, case):
    build, y_index = MASKED_CALLS[case]
    with_y = build()
    y = with_y.inputs[y_index]
    passed = (y > with_y.options.act_min) & (y < with_y.options.act_max)
    assert 0.2 < passed.mean() < 0.9  # the mask matters
    run_ok(kernels, with_y)
    packed = with_packed_mask(kernels, build(), y_index)
    run_ok(kernels, packed)
    expected = results(with_y)
    del expected[len(with_y.outputs) + y_index]
    actual = results(packed)
    del actual[len(packed.outputs) + y_index]
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def test_train_init_seeds_once_and_counts_steps(kernels):
    call = train_init_call()
    state, src_w, dst_w, src_b, dst_b = call.inputs[1], call.inputs[2].array, call.inputs[3], call.inputs[4].array, \
        call.inputs[5]
    run_ok(kernels, call)
    np.testing.assert_array_equal(dst_w, src_w[..., :2])
    np.testing.assert_array_equal(dst_b, src_b)
    assert list(state) == [1, 1]
    dst_w += 1  # trained since: a second step must not reseed
    run_ok(kernels, call)
    np.testing.assert_array_equal(dst_w, src_w[..., :2] + 1)
    assert list(state) == [1, 2]


# ---------------------------------------------------------------- inference mode and bad labels

def inference_calls():
    layer = make_layer()
    return [conv_input_grad_call(layer), depthwise_input_grad_call(), mean_grad_call(), conv_weight_grad_call(layer),
            bias_grad_call(layer), conv_grad_update_call(layer), sgd_update_call(layer)]


@pytest.mark.parametrize("index", range(7))
def test_negative_label_leaves_everything_untouched(kernels, index):
    call = inference_calls()[index]
    call.inputs[0] = label(-1)
    snapshot = [np.copy(getattr(v, "array", v)) for v in call.inputs[1:] + call.outputs if v is not None]
    run_ok(kernels, call)
    after = [getattr(v, "array", v) for v in call.inputs[1:] + call.outputs if v is not None]
    for before, now in zip(snapshot, after):
        np.testing.assert_array_equal(now, before)


def test_negative_label_softmax_gives_zero_loss(kernels):
    call = softmax_xent_call(label_value=-1)
    call.outputs[0][0] = 5.0
    run_ok(kernels, call)
    assert call.outputs[0][0] == 0.0
    assert np.isnan(call.outputs[1]).all()


def test_negative_label_train_init_seeds_without_counting(kernels):
    call = train_init_call(label_value=-1)
    run_ok(kernels, call)
    assert list(call.inputs[1]) == [1, 0]
    np.testing.assert_array_equal(call.inputs[5], call.inputs[4].array)


@pytest.mark.parametrize("label_value", [10, 11, 1000])
def test_label_beyond_classes_is_an_error(kernels, label_value):
    code, message = softmax_xent_call(classes=10, label_value=label_value).run(kernels)
    assert code == EVAL_FAILED
    assert "out of range" in message


@pytest.mark.parametrize("build", [lambda: conv_input_grad_call(make_layer()), conv_chain_call])
def test_malformed_options_fail_init(kernels, build):
    call = build()
    call.options = b"\x40\x00\x00\x00\x01"
    code, message = call.run(kernels)
    assert code == INIT_FAILED
    assert "malformed" in message


def test_chain_with_a_truncated_stage_fails_init(kernels):
    call = conv_chain_call()
    data = call.options.to_bytes()
    call.options = data[:-8]
    assert call.run(kernels) == (INIT_FAILED, "TFLT_CONV_CHAIN: malformed custom options\n")


def test_unknown_rounding_mode_fails_init(kernels):
    builder = flatbuffers.Builder(16)
    builder.StartObject(3)
    builder.PrependInt8Slot(0, 7, 0)  # SgdUpdateOptions.rounding = 7
    builder.Finish(builder.EndObject())
    call = sgd_update_call(make_layer())
    call.options = bytes(builder.Output())
    code, message = call.run(kernels)
    assert code == INIT_FAILED
    assert "malformed" in message


# ---------------------------------------------------------------- Prepare rejects bad graphs

def _set_input(index, value, *more):
    """Replaces input `index` (and further index, value pairs); an index past the end appends."""
    def mutate(call):
        changes = (index, value) + more
        for i in range(0, len(changes), 2):
            call.inputs += [None] * (changes[i] + 1 - len(call.inputs))
            call.inputs[changes[i]] = changes[i + 1]
    return mutate


def _set_output(index, value):
    def mutate(call):
        call.outputs[index] = value
    return mutate


def _set_option(**changes):
    def mutate(call):
        call.options = dataclasses.replace(call.options, **changes)
    return mutate


def _drop_inputs(count):
    def mutate(call):
        del call.inputs[-count:]
    return mutate


def _set_stage(index, **changes):
    def mutate(call):
        call.options.stages[index] = dataclasses.replace(call.options.stages[index], **changes)
    return mutate


def _first_stage_only(call):
    call.options.stages[1:] = []
    del call.inputs[5:]


def _chain_input(index, transform):
    """Replaces input `index` of conv_chain_call by `transform` of its array."""
    def mutate(call):
        call.inputs[index] = transform(call.inputs[index].array)
    return mutate


F1, I1 = np.zeros(1, F32), np.zeros(1, np.int32)

BAD_GRAPHS = {
    # (call builder, mutation, message fragment)
    "input_grad_label_shape": (lambda: conv_input_grad_call(make_layer()), _set_input(0, np.zeros(2, np.int32)),
                               "label must have shape [1]"),
    "input_grad_label_type": (lambda: conv_input_grad_call(make_layer()), _set_input(0, F1), "label must be int32"),
    "input_grad_dy_channels": (lambda: conv_input_grad_call(make_layer()),
                               _set_input(1, np.zeros((1, HO, WO, O + 1), F32), 2, None), "dy is"),
    "input_grad_dy_type": (lambda: conv_input_grad_call(make_layer()),
                           _set_input(1, np.zeros((1, HO, WO, O), np.int8)), "dy must be float32"),
    "input_grad_y_shape": (lambda: conv_input_grad_call(make_layer()),
                           _set_input(2, np.zeros((1, HO, WO + 1, O), np.int8)), "y is"),
    "input_grad_missing_w": (lambda: conv_input_grad_call(make_layer()), _set_input(3, None), "missing input 3"),
    "input_grad_w_train_too_wide": (lambda: conv_input_grad_call(make_layer()),
                                    _set_input(4, np.zeros((O, 3, 3, I + 1), np.int8)), "w_train"),
    "input_grad_w_scale_size": (lambda: conv_input_grad_call(make_layer()),
                                _set_input(5, Const(np.ones(O + 1, F32))), "w_scale must have shape [5]"),
    "input_grad_dx_shape": (lambda: conv_input_grad_call(make_layer()), _set_output(0, nan_filled((1, H, W + 1, I))),
                            "dx is"),
    "input_grad_channels_option": (lambda: conv_input_grad_call(make_layer()), _set_option(input_channels=I + 1),
                                   "dx is"),
    "input_grad_too_few_inputs": (lambda: conv_input_grad_call(make_layer()), _drop_inputs(1), "expected 6 to 6"),
    "input_grad_stride": (lambda: conv_input_grad_call(make_layer()), _set_option(stride_h=0), "strides"),
    "input_grad_padding": (lambda: conv_input_grad_call(make_layer()), _set_option(pad_left=5), "padding"),
    "input_grad_output_too_big": (lambda: conv_input_grad_call(make_layer()), _set_option(stride_h=3), "larger"),
    "input_grad_act_range": (lambda: conv_input_grad_call(make_layer()), _set_option(act_min=100, act_max=50),
                             "act_min must not exceed"),
    "input_grad_fc_image": (lambda: conv_input_grad_call(make_layer(True), True),
                            _set_option(input_height=2), "1x1 image"),
    "depthwise_weight_channels": (depthwise_input_grad_call, _set_option(depth_multiplier=1), "w's last dim"),
    "depthwise_weight_rank": (depthwise_input_grad_call, _set_input(3, Const(np.zeros((6, 6), np.int8))),
                              "[1, kh, kw, C*M]"),
    "mean_dx_shape": (mean_grad_call, _set_output(0, nan_filled((1, 3, 3, 7))), "dx is"),
    "softmax_dlogits_shape": (softmax_xent_call, _set_output(1, nan_filled((1, 11))), "same shape"),
    "softmax_loss_type": (softmax_xent_call, _set_output(0, I1), "loss must be float32"),
    "softmax_scale": (softmax_xent_call, _set_option(logits_scale=0.0), "logits_scale"),
    "update_lr_shape": (lambda: conv_grad_update_call(make_layer()), _set_input(1, np.zeros(2, F32)),
                        "lr must have shape [1]"),
    "update_state_shape": (lambda: conv_grad_update_call(make_layer()), _set_input(2, np.zeros(3, np.int32)),
                           "state must have shape [2]"),
    "update_w_qas_size": (lambda: conv_grad_update_call(make_layer()), _set_input(7, Const(np.ones(O - 1, F32))),
                          "w_qas must have shape [5]"),
    "update_w_qas_missing": (lambda: conv_grad_update_call(make_layer()), _set_input(7, None), "go together"),
    "update_nothing": (lambda: conv_grad_update_call(make_layer()), _drop_inputs(4), "nothing to update"),
    "update_bias_too_long": (lambda: conv_grad_update_call(make_layer()), _set_input(8, np.zeros(O + 1, np.int32)),
                             "b_train must be"),
    "update_bias_type": (lambda: conv_grad_update_call(make_layer()), _set_input(8, np.zeros(O, np.int8)),
                         "b_train must be int32"),
    "update_weight_outputs": (lambda: conv_grad_update_call(make_layer()),
                              _set_input(6, np.zeros((O + 1, 3, 3, K), np.int8)), "the weight must be"),
    "update_weight_wider_than_x": (lambda: conv_grad_update_call(make_layer()),
                                   _set_input(6, np.zeros((O, 3, 3, I + 1), np.int8)), "the weight must be"),
    "update_x_type": (lambda: conv_grad_update_call(make_layer()), _set_input(5, np.zeros((1, H, W, I), F32)),
                      "x must be int8"),
    "update_depthwise_shape": (lambda: conv_grad_update_call(make_layer()), _set_option(depthwise=True),
                               "depthwise weight"),
    "update_x_zero_point": (lambda: conv_grad_update_call(make_layer()), _set_option(x_zero_point=300),
                            "x_zero_point"),
    "weight_grad_dw_shape": (lambda: conv_weight_grad_call(make_layer()),
                             _set_output(0, nan_filled((O - 1, 3, 3, K))), "the weight must be"),
    "weight_grad_dw_type": (lambda: conv_weight_grad_call(make_layer()),
                            _set_output(0, np.zeros((O, 3, 3, K), np.int8)), "dw must be float32"),
    "bias_grad_db_size": (lambda: bias_grad_call(make_layer()), _set_output(0, nan_filled(O + 1)), "db must be"),
    "sgd_fraction_shape": (lambda: sgd_update_call(make_layer()),
                           _set_input(6, np.zeros((O, 3, 3, K + 1), np.int8)), "the same shape"),
    "sgd_fraction_type": (lambda: sgd_update_call(make_layer()), _set_input(6, np.zeros((O, 3, 3, K), np.int32)),
                          "fraction must be int8"),
    "sgd_fraction_of_a_bias": (lambda: sgd_update_call(make_layer()),
                               _set_input(3, np.zeros(O, F32), 4, np.zeros(O, np.int32), 6, np.zeros(O, np.int8)),
                               "int8 weight"),
    "update_fraction_without_weight": (lambda: conv_grad_update_call(make_layer()),
                                       _set_input(6, None, 7, None, 10, np.zeros((O, 3, 3, K), np.int8)),
                                       "int8 weight"),
    "update_fraction_shape": (lambda: conv_grad_update_call(make_layer()),
                              _set_input(10, np.zeros((O, 3, 3, K - 1), np.int8)), "the same shape"),
    "sgd_grad_size": (lambda: sgd_update_call(make_layer()), _set_input(3, np.zeros(3, F32)), "as many elements"),
    "sgd_axis": (lambda: sgd_update_call(make_layer()), _set_option(channel_axis=4), "channel_axis"),
    "sgd_qas_short": (lambda: sgd_update_call(make_layer()), _set_input(5, Const(np.ones(O - 1, F32))), "qas must"),
    "sgd_param_type": (lambda: sgd_update_call(make_layer()), _set_input(4, np.zeros((O, 3, 3, K), F32)),
                       "param must be int8 or int32"),
    "split_multiplier_negative": (lambda: split_conv_call(make_layer()),
                                  _set_input(4, Const(np.full(O, -1, np.int32))), "multiplier must be >= 0"),
    "split_shift_range": (lambda: split_conv_call(make_layer()), _set_input(5, Const(np.full(O, 31, np.int32))),
                          "shift in [-31, 30]"),
    "split_multiplier_variable": (lambda: split_conv_call(make_layer()),
                                  _set_input(4, np.ones(O, np.int32)), "must be a constant"),
    "split_bias_size": (lambda: split_conv_call(make_layer()), _set_input(3, Const(np.zeros(O + 1, np.int32))),
                        "bias must have shape [5]"),
    "split_y_channels": (lambda: split_conv_call(make_layer()), _set_output(0, np.zeros((1, HO, WO, O + 1), np.int8)),
                         "y is"),
    "split_x_channels": (lambda: split_conv_call(make_layer()), _set_input(0, np.zeros((1, H, W, I + 1), np.int8)),
                         "x is"),
    "depthwise_conv_weight_rank": (depthwise_conv_call, _set_input(1, Const(np.zeros((6, 6), np.int8))),
                                   "[1, kh, kw, C*M]"),
    "depthwise_conv_weight_channels": (depthwise_conv_call, _set_option(depth_multiplier=1), "w's last dim"),
    "depthwise_conv_multiplier_zero": (depthwise_conv_call, _set_option(depth_multiplier=0), "depth_multiplier"),
    "depthwise_conv_weight_type": (depthwise_conv_call, _set_input(1, np.zeros((1, 3, 3, 2 * I), np.int32)),
                                   "w must be int8"),
    "depthwise_conv_x_type": (depthwise_conv_call, _set_input(0, np.zeros((1, H, W, I), F32)), "x must be int8"),
    "depthwise_conv_x_batch": (depthwise_conv_call, _set_input(0, np.zeros((2, H, W, I), np.int8)),
                               "x must be [1, H, W, C]"),
    "depthwise_conv_y_channels": (depthwise_conv_call, _set_output(0, np.zeros((1, HO, WO, I), np.int8)), "y is"),
    "depthwise_conv_y_too_big": (depthwise_conv_call, _set_output(0, np.zeros((1, HO + 1, WO, 2 * I), np.int8)),
                                 "larger"),
    "depthwise_conv_padding": (depthwise_conv_call, _set_option(pad_top=3), "padding"),
    "depthwise_conv_dilation": (depthwise_conv_call, _set_option(dilation_w=0), "dilations"),
    "depthwise_conv_bias_size": (depthwise_conv_call, _set_input(2, np.zeros(2 * I + 1, np.int32)),
                                 "bias must have shape [6]"),
    "depthwise_conv_bias_type": (depthwise_conv_call, _set_input(2, np.zeros(2 * I, np.int8)), "bias must be int32"),
    "depthwise_conv_shift_range": (depthwise_conv_call, _set_input(4, Const(np.full(2 * I, -32, np.int32))),
                                   "shift in [-31, 30]"),
    "depthwise_conv_multiplier_variable": (depthwise_conv_call, _set_input(3, np.ones(2 * I, np.int32)),
                                           "must be a constant"),
    "depthwise_conv_missing_shift": (depthwise_conv_call, _set_input(4, None), "missing input 4"),
    "depthwise_conv_too_many_inputs": (depthwise_conv_call, lambda call: call.inputs.append(None),
                                       "expected 5 to 5"),
    "depthwise_conv_y_zero_point": (depthwise_conv_call, _set_option(y_zero_point=128), "y_zero_point"),
    "depthwise_conv_act_range": (depthwise_conv_call, _set_option(act_min=10, act_max=9), "act_min must not exceed"),
    "chain_one_stage": (conv_chain_call, _first_stage_only, "at least two stages"),
    "chain_input_count": (conv_chain_call, _drop_inputs(1), "expected 25 to 25 inputs"),
    "chain_scratch_missing": (conv_chain_call, lambda call: call.outputs.pop(), "and 2 outputs"),
    "chain_w_variable": (conv_chain_call, _chain_input(1, np.copy), "w must be a constant"),
    "chain_bias_variable": (conv_chain_call, _chain_input(6, np.copy), "bias must be a constant"),
    "chain_conv_channels": (conv_chain_call, _chain_input(9, lambda w: Const(w[..., :-1].copy())),
                            "a conv stage's w must be [O, kh, kw, I]"),
    "chain_stage_named": (conv_chain_call, _chain_input(9, lambda w: Const(w[..., :-1].copy())), "(stage 2)"),
    "chain_depthwise_channels": (conv_chain_call, _chain_input(5, lambda w: Const(w[..., :-1].copy())),
                                 "w's last dim"),
    "chain_output_channels": (conv_chain_call, _set_stage(2, output_channels=99), "output_channels must be"),
    "chain_padding": (conv_chain_call, _set_stage(0, pad_top=3), "padding"),
    "chain_stage_height": (conv_chain_call, _set_stage(1, output_height=9), "larger"),
    "chain_act_range": (conv_chain_call, _set_stage(3, act_min=10, act_max=9), "act_min must not exceed"),
    "chain_multiplier_negative": (conv_chain_call, _chain_input(15, lambda m: Const(-np.abs(m) - 1)),
                                  "multiplier must be >= 0"),
    "chain_x_type": (conv_chain_call, _set_input(0, np.zeros((1, 9, 9, 3), np.uint8)), "x must be int8"),
    "chain_y_shape": (conv_chain_call, _set_output(0, np.zeros((1, 3, 3, 2), np.int8)), "y is"),
    "chain_scratch_size": (conv_chain_call, lambda call: call.outputs.__setitem__(1, call.outputs[1][:-1].copy()),
                           "scratch must have shape"),
    "chain_scratch_type": (conv_chain_call, lambda call: call.outputs.__setitem__(
        1, call.outputs[1].astype(np.uint8)), "scratch must be int8"),
    "packed_mask_size": (lambda: conv_input_grad_call(make_layer()), _set_input(2, np.zeros(7, np.uint8)),
                         "y (a packed mask) must have shape [6]"),
    "packed_mask_rank": (lambda: bias_grad_call(make_layer()), _set_input(2, np.zeros((1, 6), np.uint8)),
                         "y (a packed mask) must have shape [6]"),
    "masked_y_type": (lambda: conv_grad_update_call(make_layer()), _set_input(4, np.zeros((1, HO, WO, O), np.int32)),
                      "y must be int8"),
    "mask_y_type": (activation_mask_call, _set_input(0, np.zeros((1, HO, WO, O), np.uint8)), "y must be int8"),
    "mask_y_empty": (activation_mask_call, _set_input(0, np.zeros((1, 0), np.int8)), "y must have 1 to"),
    "mask_output_size": (activation_mask_call, _set_output(0, np.zeros(5, np.uint8)), "mask must have shape [6]"),
    "mask_output_type": (activation_mask_call, _set_output(0, np.zeros(6, np.int8)), "mask must be uint8"),
    "mask_act_range": (activation_mask_call, _set_option(act_min=10, act_max=9), "act_min must not exceed"),
    "mask_act_min": (activation_mask_call, _set_option(act_min=-129), "act_min -129 is outside"),
    "mask_extra_input": (activation_mask_call, lambda call: call.inputs.append(None), "expected 1 to 1"),
    "mask_missing_output": (activation_mask_call, lambda call: call.outputs.clear(), "expected 1 to 1"),
    "init_odd_inputs": (train_init_call, _drop_inputs(1), "pairs"),
    "init_dst_too_wide": (train_init_call, _set_input(3, np.zeros((5, 2, 2, 4), np.int8)), "dst must"),
    "init_dst_type": (train_init_call, _set_input(5, np.zeros(5, F32)), "dst must"),
    "init_src_variable": (train_init_call, _set_input(4, np.zeros(5, np.int32)), "src must be a constant"),
    "init_state_shape": (train_init_call, _set_input(1, np.zeros(3, np.int32)), "state must have shape [2]"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_prepare_rejects_bad_graph(kernels, case):
    build, mutate, fragment = BAD_GRAPHS[case]
    call = build()
    run_ok(kernels, build())  # the unmutated graph is fine
    mutate(call)
    code, message = call.run(kernels)
    assert code == PREPARE_FAILED, message
    assert fragment in message
    assert message.startswith(call.op)


def test_every_contract_op_is_registered(kernels):
    for op in ("TFLT_TRAIN_INIT", "TFLT_SOFTMAX_XENT", "TFLT_CONV_INPUT_GRAD", "TFLT_DEPTHWISE_INPUT_GRAD",
               "TFLT_MEAN_GRAD", "TFLT_CONV_GRAD_UPDATE", "TFLT_CONV_WEIGHT_GRAD", "TFLT_BIAS_GRAD",
               "TFLT_SGD_UPDATE", "TFLT_CONV_2D_SPLIT", "TFLT_DEPTHWISE_CONV_2D", "TFLT_ACTIVATION_MASK",
               "TFLT_CONV_CHAIN", "TFLT_DEPTHWISE_POINTWISE_GRAD"):
        assert Call(op, b"", [], []).run(kernels)[0] != NO_SUCH_OP, op
    assert Call("TFLT_NOT_AN_OP", b"", [], []).run(kernels)[0] == NO_SUCH_OP
