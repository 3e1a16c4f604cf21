"""micro/core (the C++ training math) against the normative numpy reference in
tflm_train/kernels_grad/, through the C shim tests/cc/core_shim.cc.

Integer outputs and updated parameters must match bit for bit; float gradients
follow the contract's evaluation order, so they are compared exactly too.
Every case is drawn from a fixed seed, so a failure names its reproducer.
"""
from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest

from chain_cases import CHAINS, chain_parameters, random_chain, random_layers
from depthwise_cases import varied
from micro_build import CORE_SOURCES, REPO, build_library, ptr
from tflm_train.kernels_grad import common, conv, mean, softmax_xent, train_init, update
from tflm_train.kernels_grad.common import F32, Window
from tflm_train.kernels_grad.conv_chain import conv_chain, in_place_offset
from tflm_train.kernels_grad.depthwise_conv import depthwise_conv2d, depthwise_input_grad
from tflm_train.reference.quantization import multiply_by_quantized_multiplier, quantize_multiplier

# NaN-guard and exp edge cases feed NaN and infinity to the reference on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

SEEDS = list(range(12))
NEAREST, STOCHASTIC = 0, 1
KERNELS = (1, 3, 5, 7)
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1

P, I, F, U32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_uint32
SIGNATURES = {
    "shim_check_geometry": ([P], ctypes.c_char_p),
    "shim_hash32": ([U32], U32),
    "shim_exp_ref": ([P, I, P], None),
    "shim_softmax_xent": ([P, I, F, I, I, P, P], None),
    "shim_conv_input_grad": ([P, P, P, I, I, P, P, I, I, I, P, P], None),
    "shim_depthwise_input_grad": ([P, P, P, I, I, P, P, I, I, P], None),
    "shim_mean_grad": ([P, I, I, I, P], None),
    "shim_bias_grad": ([I, I, P, P, I, I, I, P], None),
    "shim_conv_weight_grad": ([P, I, P, F, P, P, I, I, P, P], None),
    "shim_conv_grad_update": ([P, I, P, F, P, P, I, I, P, F, P, P, P, P, P], None),
    "shim_sgd_update": ([P, P, I, I, I, I, P, F, I, I, I], None),
    "shim_multiply_by_quantized_multiplier": ([P, P, P, I, P], None),
    "shim_split_conv": ([P, P, P, P, P, I, I, I, P, P, P, P], None),
    "shim_depthwise_conv": ([P, P, P, P, I, I, P, P, P, P], None),
    "shim_conv_chain_scratch_bytes": ([P, I], ctypes.c_size_t),
    "shim_conv_chain": ([P, P, I, P, P, P], None),
    "shim_conv_chain_in_place_offset": ([P, I], ctypes.c_int64),
    "shim_copy_leading_channels": ([P, P, I, I, I, I], None),
    "shim_next_step": ([ctypes.c_int32], ctypes.c_int32),
}


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro_core") / "core_shim.so"
    return build_library([REPO / "tests" / "cc" / "core_shim.cc", *CORE_SOURCES], out, SIGNATURES)


# ---------------------------------------------------------------- random cases

@dataclasses.dataclass(frozen=True)
class ConvCase:
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    window: Window

    def geometry(self) -> np.ndarray:
        """The shim's int[12] geometry."""
        w = self.window
        return np.array([self.in_h, self.in_w, self.out_h, self.out_w, self.kernel_h, self.kernel_w,
                         w.stride_h, w.stride_w, w.dilation_h, w.dilation_w, w.pad_top, w.pad_left], np.int32)

    def window_options(self) -> dict:
        return dataclasses.asdict(self.window)


def _random_axis(rng, kernel, stride, padding):
    """(in, out, kernel, stride, dilation, pad) of one spatial axis, SAME/VALID resolved as TFLM does."""
    dilation = 1 if kernel == 1 else int(rng.choice([1, 2]))
    smallest = (kernel - 1) * dilation + 1 if padding == "VALID" else 1
    size = int(rng.integers(smallest, smallest + 6))
    out, pad = common.resolve_padding(padding, size, kernel, stride, dilation)
    return size, out, kernel, stride, dilation, pad


def random_case(rng, seed: int, fully_connected: bool = False) -> ConvCase:
    """Rows cycle through kernels 1/3/5/7, strides 1/2 and SAME/VALID with the seed; columns are random."""
    if fully_connected:
        return ConvCase(1, 1, 1, 1, 1, 1, Window())
    rows = _random_axis(rng, KERNELS[seed % 4], 1 + (seed // 4) % 2, ("SAME", "VALID")[seed % 2])
    cols = _random_axis(rng, int(rng.choice(KERNELS)), int(rng.choice([1, 2])), str(rng.choice(["SAME", "VALID"])))
    window = Window(stride_h=rows[3], stride_w=cols[3], dilation_h=rows[4], dilation_w=cols[4],
                    pad_top=rows[5], pad_left=cols[5])
    return ConvCase(rows[0], cols[0], rows[1], cols[1], rows[2], cols[2], window)


def channels(rng) -> int:
    """Mostly odd channel counts."""
    return int(rng.choice([1, 3, 5, 7, 2, 6]))


def int8(rng, shape) -> np.ndarray:
    return rng.integers(-127, 128, size=shape).astype(np.int8)


def gradient(rng, shape) -> np.ndarray:
    """float32 dy with some exact zeros."""
    dy = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 30.0])).astype(F32)
    dy.flat[::7] = 0.0
    return dy


def activation(rng, shape):
    """(y, act_min, act_max); y is None (no fused activation) in about one case in three.
    Some y sit exactly on the range ends, which the mask excludes."""
    if rng.random() < 1 / 3:
        return None, -128, 127
    act_min = int(rng.integers(-128, 0))
    act_max = int(rng.choice([127, int(rng.integers(act_min + 1, 128))]))
    y = rng.integers(-128, 128, size=shape).astype(np.int8)
    y.flat[::5] = act_min
    y.flat[1::5] = act_max
    return y, act_min, act_max


def positive_scales(rng, n) -> np.ndarray:
    return (10.0 ** rng.uniform(-4, -1, size=n)).astype(F32)


def activation_shape(case: ConvCase, c: int, fully_connected: bool) -> tuple:
    return (1, c) if fully_connected else (1, case.out_h, case.out_w, c)


def assert_exact(actual, expected):
    """Bit-exact float32 results (NaN-aware), reported with the relative error if not."""
    expected = np.asarray(expected, F32).reshape(actual.shape)
    np.testing.assert_array_equal(actual, expected)


def nan_filled(shape) -> np.ndarray:
    """An output buffer whose unwritten elements would show up as NaN."""
    return np.full(shape, np.nan, F32)


# ---------------------------------------------------------------- helpers and loss

def test_hash32_matches_reference(core):
    values = np.random.default_rng(0).integers(0, 2 ** 32, size=2000, dtype=np.uint64).astype(np.uint32)
    values[:3] = (0, 1, 0xFFFFFFFF)
    expected = common.hash32(values)
    actual = np.array([core.shim_hash32(int(v)) for v in values], np.uint32)
    np.testing.assert_array_equal(actual, expected)


def test_exp_ref_matches_reference(core):
    edges = np.array([-87.0, np.nextafter(F32(-87.0), F32(-100.0)), -86.99999, -88.0, 0.0, -0.0, 1e-30, -1e-30,
                      0.34657359, -0.34657359, 5.0, 100.0, np.inf, -np.inf, np.nan], F32)
    x = np.concatenate([np.linspace(-100.0, 10.0, 20001, dtype=F32), edges])
    actual = nan_filled(x.shape)
    core.shim_exp_ref(ptr(x), x.size, ptr(actual))
    assert_exact(actual, common.exp_ref(x))
    inside = (x > -80) & (x < 10)
    np.testing.assert_allclose(actual[inside], np.exp(x[inside].astype(np.float64)), rtol=2e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_xent_matches_reference(core, seed):
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(1, 13))
    logits = rng.integers(-128, 128, size=(1, classes)).astype(np.int8)
    scale, zero_point = float(F32(10.0 ** rng.uniform(-3, 0))), int(rng.integers(-128, 128))
    label = int(rng.integers(0, classes))
    loss, dlogits = np.zeros(1, F32), nan_filled(logits.shape)
    core.shim_softmax_xent(ptr(logits), classes, scale, zero_point, label, ptr(loss), ptr(dlogits))
    expected_loss, expected = softmax_xent.softmax_xent(logits, label, logits_scale=scale,
                                                        logits_zero_point=zero_point)
    assert_exact(dlogits, expected)
    np.testing.assert_allclose(loss[0], expected_loss, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- backward

@pytest.mark.parametrize("fully_connected", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_conv_input_grad_matches_reference(core, seed, fully_connected):
    rng = np.random.default_rng(seed)
    case = random_case(rng, seed, fully_connected)
    out_c, in_c = channels(rng), channels(rng) + 1
    shape = (out_c, in_c) if fully_connected else (out_c, case.kernel_h, case.kernel_w, in_c)
    w = int8(rng, shape)
    split = seed % 3 != 0  # K < I for most seeds
    train_c = int(rng.integers(1, in_c)) if split else 0
    w_train = int8(rng, shape[:-1] + (train_c,)) if split else None
    w_scale = positive_scales(rng, out_c)
    dy = gradient(rng, activation_shape(case, out_c, fully_connected))
    y, act_min, act_max = activation(rng, dy.shape)
    dx = nan_filled((1, case.in_h, case.in_w, in_c))
    core.shim_conv_input_grad(ptr(case.geometry()), ptr(dy), ptr(y), act_min, act_max, ptr(w), ptr(w_train),
                              out_c, in_c, train_c, ptr(w_scale), ptr(dx))
    expected = conv.conv_input_grad(dy, y, w, w_train, w_scale, **case.window_options(),
                                    input_height=case.in_h, input_width=case.in_w, input_channels=in_c,
                                    act_min=act_min, act_max=act_max)
    assert_exact(dx, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_input_grad_matches_reference(core, seed):
    rng = np.random.default_rng(seed)
    case = random_case(rng, seed)
    in_c, multiplier = channels(rng), 1 + seed % 2
    out_c = in_c * multiplier
    w = int8(rng, (1, case.kernel_h, case.kernel_w, out_c))
    w_scale = positive_scales(rng, out_c)
    dy = gradient(rng, (1, case.out_h, case.out_w, out_c))
    y, act_min, act_max = activation(rng, dy.shape)
    dx = nan_filled((1, case.in_h, case.in_w, in_c))
    core.shim_depthwise_input_grad(ptr(case.geometry()), ptr(dy), ptr(y), act_min, act_max, ptr(w),
                                   ptr(w_scale), in_c, multiplier, ptr(dx))
    expected = depthwise_input_grad(dy, y, w, w_scale, **case.window_options(), input_height=case.in_h,
                                    input_width=case.in_w, input_channels=in_c, depth_multiplier=multiplier,
                                    act_min=act_min, act_max=act_max)
    assert_exact(dx, expected)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_mean_grad_matches_reference(core, seed):
    rng = np.random.default_rng(seed)
    height, width, c = int(rng.integers(1, 8)), int(rng.integers(1, 8)), channels(rng)
    dy = gradient(rng, (1, c))
    dx = nan_filled((1, height, width, c))
    core.shim_mean_grad(ptr(dy), height, width, c, ptr(dx))
    assert_exact(dx, mean.mean_grad(dy, input_height=height, input_width=width))


# ---------------------------------------------------------------- parameter gradients and updates

@dataclasses.dataclass
class LayerCase:
    """A conv / FC / depthwise layer's backward inputs and its trainable weight's shape."""
    case: ConvCase
    dy: np.ndarray
    y: np.ndarray
    act_min: int
    act_max: int
    x: np.ndarray
    x_zero_point: int
    x_scale: float
    weight_shape: tuple
    depthwise: bool
    multiplier: int

    @property
    def out_channels(self) -> int:
        return self.dy.shape[-1]

    def spec(self) -> np.ndarray:
        """The shim's spec ints: x_channels, train_channels, depthwise, depth_multiplier, x_zero_point."""
        return np.array([self.x.size // (self.case.in_h * self.case.in_w), self.weight_shape[-1],
                         int(self.depthwise), self.multiplier, self.x_zero_point], np.int32)

    def options(self) -> dict:
        return dict(**self.case.window_options(), x_zero_point=self.x_zero_point, x_scale=self.x_scale,
                    act_min=self.act_min, act_max=self.act_max, depthwise=self.depthwise,
                    depth_multiplier=self.multiplier)

    def shim_args(self) -> tuple:
        return (ptr(self.case.geometry()), self.out_channels, ptr(self.spec()), self.x_scale, ptr(self.dy),
                ptr(self.y), self.act_min, self.act_max, ptr(self.x))


LAYER_KINDS = ("conv", "fully_connected", "fully_connected_4d_input", "depthwise")


def random_layer(rng, seed: int, kind: str) -> LayerCase:
    fully_connected = kind.startswith("fully_connected")
    case = random_case(rng, seed, fully_connected)
    multiplier = 1 + seed % 2 if kind == "depthwise" else 1
    in_c = channels(rng)
    out_c = in_c * multiplier if kind == "depthwise" else channels(rng)
    if kind == "fully_connected_4d_input":  # FC flattens a [1, h, w, c] input
        x = int8(rng, (1, 2, 3, in_c))
        in_c = x.size
    else:
        x = int8(rng, (1, in_c) if fully_connected else (1, case.in_h, case.in_w, in_c))
    train_c = int(rng.integers(1, in_c + 1))
    if kind == "depthwise":
        weight_shape = (1, case.kernel_h, case.kernel_w, out_c)
    elif fully_connected:
        weight_shape = (out_c, train_c)
    else:
        weight_shape = (out_c, case.kernel_h, case.kernel_w, train_c)
    dy = gradient(rng, activation_shape(case, out_c, fully_connected))
    y, act_min, act_max = activation(rng, dy.shape)
    return LayerCase(case, dy, y, act_min, act_max, x, int(rng.integers(-128, 128)),
                     float(F32(10.0 ** rng.uniform(-3, -1))), weight_shape, kind == "depthwise", multiplier)


@pytest.mark.parametrize("seed", SEEDS)
def test_bias_grad_matches_reference(core, seed):
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, seed, "conv")
    bias_c = int(rng.integers(1, layer.out_channels + 1))
    db = nan_filled(bias_c)
    core.shim_bias_grad(layer.case.out_h * layer.case.out_w, layer.out_channels, ptr(layer.dy), ptr(layer.y),
                        layer.act_min, layer.act_max, bias_c, ptr(db))
    assert_exact(db, conv.bias_grad(layer.dy, layer.y, act_min=layer.act_min, act_max=layer.act_max)[:bias_c])


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_conv_weight_grad_matches_reference(core, seed, kind):
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, seed, kind)
    dw = nan_filled(layer.weight_shape)
    core.shim_conv_weight_grad(*layer.shim_args(), ptr(dw))
    expected = conv.conv_weight_grad(layer.dy, layer.y, layer.x, weight_shape=layer.weight_shape, **layer.options())
    assert_exact(dw, expected)


def qas_scales(rng, n, dead: bool) -> np.ndarray:
    """Per-channel QAS scales spanning tiny to huge steps; `dead` zeroes some channels (frozen)."""
    qas = (10.0 ** rng.uniform(0, 4, size=n)).astype(F32)
    if dead:
        qas[rng.random(n) < 0.4] = 0.0
    return qas


def poison(rng, dy: np.ndarray) -> None:
    """A NaN and an infinity in dy: updates they reach must be skipped or clamped, never garbage."""
    dy.flat[int(rng.integers(0, dy.size))] = np.nan
    dy.flat[int(rng.integers(0, dy.size))] = np.inf


@dataclasses.dataclass
class Trainables:
    w_train: np.ndarray
    w_qas: np.ndarray
    b_train: np.ndarray
    b_qas: np.ndarray
    lr: float
    step: int
    weight_param_id: int
    bias_param_id: int

    def copy(self) -> "Trainables":
        return dataclasses.replace(self, w_train=None if self.w_train is None else self.w_train.copy(),
                                   b_train=None if self.b_train is None else self.b_train.copy())


def random_trainables(rng, seed: int, layer: LayerCase) -> Trainables:
    out_c = layer.out_channels
    train_weight, train_bias = (True, True) if seed % 4 < 2 else (seed % 4 == 2, seed % 4 == 3)
    bias_c = int(rng.integers(1, out_c + 1))
    b_train = rng.integers(-10 ** 6, 10 ** 6, size=bias_c).astype(np.int32)
    b_train[0] = INT32_MAX - 3 if seed % 2 else INT32_MIN + 3  # saturates under a large step
    b_qas = qas_scales(rng, out_c, dead=seed % 3 == 0)
    b_qas[0] = 1e12
    return Trainables(
        w_train=int8(rng, layer.weight_shape) if train_weight else None,
        w_qas=qas_scales(rng, out_c, dead=seed % 3 == 0) if train_weight else None,
        b_train=b_train if train_bias else None, b_qas=b_qas if train_bias else None,
        lr=float(F32(10.0 ** rng.uniform(-3, 1))), step=int(rng.integers(INT32_MIN, INT32_MAX)),
        weight_param_id=int(rng.integers(0, 100)), bias_param_id=int(rng.integers(0, 100)))


def run_fused_update(core, layer: LayerCase, params: Trainables, rounding: int) -> None:
    step_ints = np.array([rounding, params.step, params.weight_param_id, params.bias_param_id,
                          0 if params.b_train is None else params.b_train.size], np.int32)
    core.shim_conv_grad_update(*layer.shim_args(), params.lr, ptr(step_ints), ptr(params.w_train),
                               ptr(params.w_qas), ptr(params.b_train), ptr(params.b_qas))


@pytest.mark.parametrize("rounding", [NEAREST, STOCHASTIC])
@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_fused_update_matches_reference(core, seed, kind, rounding):
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, seed, kind)
    if seed % 5 == 4:
        poison(rng, layer.dy)
    params = random_trainables(rng, seed, layer)
    expected = params.copy()
    run_fused_update(core, layer, params, rounding)
    conv.conv_grad_update(expected.lr, expected.step, layer.dy, layer.y, layer.x, expected.w_train, expected.w_qas,
                          expected.b_train, expected.b_qas, **layer.options(), rounding=rounding,
                          weight_param_id=expected.weight_param_id, bias_param_id=expected.bias_param_id)
    for actual, reference in ((params.w_train, expected.w_train), (params.b_train, expected.b_train)):
        if reference is not None:
            np.testing.assert_array_equal(actual, reference)


def test_fused_updates_move_parameters(core):
    """Guards the comparison above against a vacuous pass: updates really change weights and biases,
    saturate int32 biases and leave dead channels alone."""
    rng = np.random.default_rng(1)
    layer = dataclasses.replace(random_layer(rng, 1, "conv"), y=None)
    params = random_trainables(rng, 1, layer)
    params.w_qas[0], params.w_qas[1:] = 0.0, 1e4
    before = params.copy()
    run_fused_update(core, layer, params, NEAREST)
    np.testing.assert_array_equal(params.w_train[0], before.w_train[0])
    assert (params.w_train[1:] != before.w_train[1:]).any()
    assert params.b_train[0] in (INT32_MIN, INT32_MAX)


@pytest.mark.parametrize("rounding", [NEAREST, STOCHASTIC])
@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("seed", SEEDS[:6])
def test_fused_update_equals_conventional_schedule(core, seed, kind, rounding):
    """TFLT_CONV_GRAD_UPDATE == TFLT_CONV_WEIGHT_GRAD / TFLT_BIAS_GRAD then TFLT_SGD_UPDATE, in C++."""
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, seed, kind)
    params = random_trainables(rng, seed, layer)
    conventional = params.copy()
    run_fused_update(core, layer, params, rounding)
    if conventional.w_train is not None:
        dw = nan_filled(layer.weight_shape)
        core.shim_conv_weight_grad(*layer.shim_args(), ptr(dw))
        axis = conv.weight_channel_axis(len(layer.weight_shape), layer.depthwise)
        run_sgd_update(core, dw, conventional.w_train, conventional.w_qas, axis, conventional.lr, rounding,
                       conventional.weight_param_id, conventional.step)
        np.testing.assert_array_equal(params.w_train, conventional.w_train)
    if conventional.b_train is not None:
        db = nan_filled(conventional.b_train.size)
        core.shim_bias_grad(layer.case.out_h * layer.case.out_w, layer.out_channels, ptr(layer.dy), ptr(layer.y),
                            layer.act_min, layer.act_max, db.size, ptr(db))
        run_sgd_update(core, db, conventional.b_train, conventional.b_qas, 0, conventional.lr, rounding,
                       conventional.bias_param_id, conventional.step)
        np.testing.assert_array_equal(params.b_train, conventional.b_train)


def run_sgd_update(core, grad, param, qas, channel_axis, lr, rounding, param_id, step) -> None:
    axis = channel_axis % param.ndim
    inner = int(np.prod(param.shape[axis + 1:], dtype=np.int64))
    core.shim_sgd_update(ptr(np.ascontiguousarray(grad, F32)), ptr(param), int(param.dtype == np.int8),
                         param.size, param.shape[axis], inner, ptr(qas), lr, rounding, param_id, step)


@pytest.mark.parametrize("rounding", [NEAREST, STOCHASTIC])
@pytest.mark.parametrize("dtype", [np.int8, np.int32])
@pytest.mark.parametrize("seed", SEEDS)
def test_sgd_update_matches_reference(core, seed, dtype, rounding):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 5))))
    channel_axis = int(rng.integers(-len(shape), len(shape)))
    info = np.iinfo(dtype)
    param = rng.integers(max(info.min, -10 ** 6), min(info.max, 10 ** 6) + 1, size=shape).astype(dtype)
    param.flat[0], param.flat[-1] = info.max - 1, info.min + 1
    grad = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)).astype(F32)
    grad.flat[::3] *= F32(1e6)                      # steps beyond the clamp limits
    grad.flat[1::5] = np.nan                        # NaN guard
    grad.flat[2::7] = -np.inf
    qas = qas_scales(rng, shape[channel_axis % len(shape)] + int(rng.integers(0, 2)), dead=True)
    lr, step, param_id = float(F32(10.0 ** rng.uniform(-3, 1))), int(rng.integers(INT32_MIN, INT32_MAX)), seed
    expected = param.copy()
    update.sgd_update(grad, expected, qas, lr, step, rounding=rounding, param_id=param_id, channel_axis=channel_axis)
    run_sgd_update(core, grad, param, qas, channel_axis, lr, rounding, param_id, step)
    np.testing.assert_array_equal(param, expected)


# ---------------------------------------------------------------- forward with split weights

def test_multiply_by_quantized_multiplier_matches_reference(core):
    rng = np.random.default_rng(0)
    n = 20000
    x = rng.integers(INT32_MIN, INT32_MAX, size=n, dtype=np.int64).astype(np.int32)
    x[:6] = (INT32_MIN, INT32_MAX, 0, 1, -1, -(1 << 20))
    x[n // 2:] //= rng.integers(1, 1 << 20, size=n - n // 2).astype(np.int32)
    pairs = [quantize_multiplier(float(r)) for r in 10.0 ** rng.uniform(-9, 1.5, size=n // 2)]
    multiplier = np.array([m for m, _ in pairs] + list(rng.integers(0, INT32_MAX, size=n - n // 2)), np.int32)
    shift = np.array([s for _, s in pairs] + list(rng.integers(-31, 31, size=n - n // 2)), np.int32)
    out = np.zeros(n, np.int32)
    core.shim_multiply_by_quantized_multiplier(ptr(x), ptr(multiplier), ptr(shift), n, ptr(out))
    np.testing.assert_array_equal(out, multiply_by_quantized_multiplier(x, multiplier, shift))


@dataclasses.dataclass
class OutputStage:
    """A random int8 conv output stage: bias (or None), requantisation, zero points, clamp."""
    bias: object
    multiplier: np.ndarray
    shift: np.ndarray
    x_zero_point: int
    y_zero_point: int
    act_min: int
    act_max: int

    @classmethod
    def random(cls, rng, seed: int, out_c: int) -> "OutputStage":
        bias = None
        if seed % 4 != 3:
            bias = rng.integers(-10 ** 5, 10 ** 5, size=out_c).astype(np.int32)
            if seed % 4 == 2:
                bias[0] = INT32_MAX - 5  # the int32 accumulator wraps as TFLM's does
        s_x, s_y = 10.0 ** rng.uniform(-3, -1), 10.0 ** rng.uniform(-2, 0)
        pairs = [quantize_multiplier(s_x * float(s_w) / s_y) for s_w in 10.0 ** rng.uniform(-4, -1, size=out_c)]
        act_min = int(rng.integers(-128, 0))
        return cls(bias, np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32),
                   int(rng.integers(-128, 128)), int(rng.integers(-128, 128)), act_min,
                   int(rng.integers(act_min, 128)))

    def params(self) -> np.ndarray:
        """The shim's int[4]."""
        return np.array([self.x_zero_point, self.y_zero_point, self.act_min, self.act_max], np.int32)

    def options(self) -> dict:
        return {name: getattr(self, name) for name in ("x_zero_point", "y_zero_point", "act_min", "act_max")}


@pytest.mark.parametrize("fully_connected", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_split_conv_matches_reference(core, seed, fully_connected):
    rng = np.random.default_rng(seed)
    case = random_case(rng, seed, fully_connected)
    out_c, in_c = channels(rng), channels(rng) + 1
    shape = (out_c, in_c) if fully_connected else (out_c, case.kernel_h, case.kernel_w, in_c)
    w = int8(rng, shape)
    train_c = int(rng.integers(1, in_c))
    w_train = int8(rng, shape[:-1] + (train_c,))
    x = int8(rng, (1, in_c) if fully_connected else (1, case.in_h, case.in_w, in_c))
    stage = OutputStage.random(rng, seed, out_c)
    y = np.zeros(activation_shape(case, out_c, fully_connected), np.int8)
    core.shim_split_conv(ptr(case.geometry()), ptr(stage.params()), ptr(x), ptr(w), ptr(w_train), out_c, in_c,
                         train_c, ptr(stage.bias), ptr(stage.multiplier), ptr(stage.shift), ptr(y))
    expected = conv.conv2d_split(x, w, w_train, stage.bias, stage.multiplier, stage.shift, output_height=case.out_h,
                                 output_width=case.out_w, **case.window_options(), **stage.options())
    np.testing.assert_array_equal(y, expected.reshape(y.shape))


def explicit_padding_case(rng) -> ConvCase:
    """Any padding the kernels accept: each pad in [0, (kernel - 1) * dilation] and any output
    size whose windows all start inside the input (so the trailing padding is arbitrary too)."""
    axes = []
    for _ in range(2):
        kernel, stride, dilation = int(rng.choice(KERNELS)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
        size, pad = int(rng.integers(1, 9)), int(rng.integers(0, (kernel - 1) * dilation + 1))
        axes.append((size, int(rng.integers(1, (size - 1 + pad) // stride + 2)), kernel, stride, dilation, pad))
    (h, oh, kh, sh, dh, pt), (w, ow, kw, sw, dw, pl) = axes
    return ConvCase(h, w, oh, ow, kh, kw, Window(sh, sw, dh, dw, pt, pl))


@pytest.mark.parametrize("seed", range(18))
def test_depthwise_conv_matches_reference(core, seed):
    """Depth multipliers 1-3, SAME/VALID or explicit padding, and more output channels than
    one accumulator block (64) with a block edge inside a depth-multiplier group."""
    rng = np.random.default_rng(seed)
    case = explicit_padding_case(rng) if seed % 2 else random_case(rng, seed // 2)
    m = 1 + seed % 3
    in_c = int(rng.choice([1, 3, 5, 45])) if seed % 6 else 45
    x = int8(rng, (1, case.in_h, case.in_w, in_c))
    w = int8(rng, (1, case.kernel_h, case.kernel_w, in_c * m))
    stage = OutputStage.random(rng, seed, in_c * m)
    y = np.zeros((1, case.out_h, case.out_w, in_c * m), np.int8)
    assert core.shim_check_geometry(ptr(case.geometry())) is None
    core.shim_depthwise_conv(ptr(case.geometry()), ptr(stage.params()), ptr(x), ptr(w), in_c, m, ptr(stage.bias),
                             ptr(stage.multiplier), ptr(stage.shift), ptr(y))
    expected = depthwise_conv2d(x, w, stage.bias, stage.multiplier, stage.shift, output_height=case.out_h,
                                output_width=case.out_w, **case.window_options(), **stage.options(),
                                depth_multiplier=m)
    np.testing.assert_array_equal(y, expected)


def chain_stage_ints(x_shape, stages, parameters) -> np.ndarray:
    """The shim's int32[20] per stage: depthwise, geometry, output stage, channels, depth multiplier."""
    rows, (h, w, c) = [], x_shape[1:]
    for stage, (weight, *_) in zip(stages, parameters):
        window = [getattr(stage, name) for name in common.WINDOW_FIELDS]
        rows.append([stage.depthwise, h, w, stage.output_height, stage.output_width, *weight.shape[1:3], *window,
                     stage.x_zero_point, stage.y_zero_point, stage.act_min, stage.act_max, c, stage.output_channels,
                     stage.depth_multiplier])
        h, w, c = stage.output_height, stage.output_width, stage.output_channels
    return np.array(rows, np.int32)


@pytest.mark.parametrize("seed", range(len(CHAINS) + 10))
def test_conv_chain_matches_reference(core, seed):
    """The named chains, then random ones; the windows stay inside the scratch they are given."""
    rng = np.random.default_rng(seed)
    if seed < len(CHAINS):
        layers, size = CHAINS[sorted(CHAINS)[seed]]
    else:
        size = (*(int(s) for s in rng.integers(10, 24, size=2)), int(rng.integers(1, 5)))
        layers = random_layers(rng, int(rng.integers(2, 6)), *size[:2])
    chain = random_chain(rng, layers, *size)
    op = chain.chain_op(chain.graph())
    stages, parameters = chain_parameters(op)
    ints = chain_stage_ints(chain.x.shape, stages, parameters)
    tensors = (ctypes.c_void_p * ints.size)(*(ptr(a) for arrays in parameters for a in arrays))
    scratch_bytes = op.outputs[1].size
    assert core.shim_conv_chain_scratch_bytes(ptr(ints), len(stages)) == scratch_bytes
    guard = 64
    scratch = np.full(scratch_bytes + guard, 0x5A, np.int8)
    x = chain.image(rng)
    y = np.zeros(chain.y.shape, np.int8)
    core.shim_conv_chain(ptr(ints), tensors, len(stages), ptr(x), ptr(scratch), ptr(y))
    expected = conv_chain(x, parameters, stages)
    np.testing.assert_array_equal(y, expected)
    assert varied(y) and (scratch[scratch_bytes:] == 0x5A).all()

    # In place: y written over x as far on as both implementations allow (y before x if negative).
    offset = in_place_offset(stages, chain.x.shape)
    assert core.shim_conv_chain_in_place_offset(ptr(ints), len(stages)) == offset
    offset = min(offset, x.size)
    x_at, y_at = max(0, -offset), max(0, offset)
    shared = np.zeros(max(x_at + x.size, y_at + y.size), np.int8)
    shared[x_at:x_at + x.size] = x.ravel()
    core.shim_conv_chain(ptr(ints), tensors, len(stages), shared[x_at:].ctypes.data, ptr(scratch),
                         shared[y_at:].ctypes.data)
    np.testing.assert_array_equal(shared[y_at:y_at + y.size].reshape(y.shape), expected)


# ---------------------------------------------------------------- initialisation and geometry

@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float32])
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_train_init_copy_matches_reference(core, seed, dtype):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 5))))
    src = rng.integers(-100, 100, size=shape).astype(dtype)
    dst_last = int(rng.integers(1, shape[-1] + 1))
    dst = np.zeros(shape[:-1] + (dst_last,), dtype)
    expected = np.zeros_like(dst)
    train_init.train_init(0, np.zeros(2, np.int32), [(src, expected)])
    core.shim_copy_leading_channels(ptr(src), ptr(dst), src.size // shape[-1], shape[-1], dst_last,
                                    src.itemsize)
    np.testing.assert_array_equal(dst, expected)


@pytest.mark.parametrize("step", [0, 41, INT32_MAX, -1, INT32_MIN])
def test_step_counter_wraps_like_reference(core, step):
    state = np.array([1, step], np.int32)
    train_init.train_init(0, state, [])
    assert core.shim_next_step(step) == state[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_same_and_valid_geometries_pass_the_check(core, seed):
    case = random_case(np.random.default_rng(seed), seed)
    assert core.shim_check_geometry(ptr(case.geometry())) is None


@pytest.mark.parametrize("index, value, problem", [
    (6, 0, b"strides"), (9, 0, b"dilations"), (10, -1, b"padding"), (10, 3, b"padding"),
    (2, 9, b"larger"), (0, 0, b"positive"),
])
def test_inconsistent_geometries_are_rejected(core, index, value, problem):
    # 5x5 input, 3x3 kernel, stride 1, SAME: 5x5 output, pads 1.
    geometry = np.array([5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1], np.int32)
    geometry[index] = value
    assert problem in core.shim_check_geometry(ptr(geometry))
