"""TFLT_DEPTHWISE_POINTWISE_GRAD: its numpy reference against the composition of the three ops it
replaces (TFLT_DEPTHWISE_INPUT_GRAD → TFLT_CONV_INPUT_GRAD → TFLT_CONV_GRAD_UPDATE), in block mode
the five (the projection's TFLT_CONV_INPUT_GRAD first, the depthwise TFLT_CONV_GRAD_UPDATE last),
and micro/core's DepthwisePointwiseGrad, the kernel and the stock TFLM interpreter against that
reference, bit for bit.
"""
from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest

from micro_build import CORE_SOURCES, REPO, build_library, ptr
from tflm_train import ir
from tflm_train.kernels_grad.common import F32, activation_mask, resolve_padding, table_fields
from tflm_train.kernels_grad.conv import conv_grad_update, conv_input_grad
from tflm_train.kernels_grad.depthwise_conv import depthwise_input_grad
from tflm_train.kernels_grad.depthwise_pointwise import Block, depthwise_pointwise_grad
from tflm_train.kernels_grad.mask import pack_activation_mask
from tflm_train.schema.training_ops_generated import (ActivationMaskOptions, ConvGradOptions, ConvUpdateOptions,
                                                      DepthwisePointwiseGradOptions, Rounding, TrainInitOptions)
from tflm_train.tflm_runner import TflmSession

pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

SEEDS = range(24)
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


@dataclasses.dataclass
class Case:
    """A depthwise layer reading a 1×1 conv's output, the gradient reaching the depthwise
    output, and what the backward does at the 1×1 layer (dx, weight and/or bias update)."""
    depthwise: ConvGradOptions      # input: the 1×1 layer's output [1, H', W', C]
    pointwise: ConvUpdateOptions
    dy: np.ndarray                  # [1, Ho, Wo, C*M]
    dw_y: object                    # None, int8 or packed
    dw_w: np.ndarray
    dw_w_scale: np.ndarray
    pw_y: object
    pw_w: np.ndarray                # [C, k, k, I] (1×1 with dx): the constant, or w_train itself (ratio 1)
    pw_w_scale: np.ndarray
    x: np.ndarray                   # [1, H, W, I]
    w_train: object                 # [C, k, k, K] or None
    w_qas: object
    b_train: object                 # [Cb] or None
    b_qas: object
    dx: bool                        # the backward continues past the 1×1 layer
    lr: float
    step: int
    block: Block = None             # block mode: dy is the projection's output gradient

    @property
    def dw_y_size(self) -> int:
        """Elements of the depthwise layer's output (its gradient's in block mode too)."""
        d = self.depthwise
        if self.block is None:
            return self.dy.size
        return self.block.projection["input_height"] * self.block.projection["input_width"] * \
            d.input_channels * d.depth_multiplier

    @property
    def split(self) -> bool:
        return self.w_train is not None and self.w_train is not self.pw_w

    def copy(self) -> "Case":
        w_train = None if self.w_train is None else self.w_train.copy()
        pw_w = w_train if self.w_train is self.pw_w else self.pw_w
        b_train = None if self.b_train is None else self.b_train.copy()
        dw_w, block = self.dw_w, self.block
        if block is not None:
            dw_w_train = None if block.dw_w_train is None else block.dw_w_train.copy()
            dw_w = dw_w_train if block.dw_w_train is self.dw_w else dw_w
            block = dataclasses.replace(block, dw_w_train=dw_w_train, dw_b_train=None if block.dw_b_train is None
                                        else block.dw_b_train.copy())
        return dataclasses.replace(self, w_train=w_train, pw_w=pw_w, b_train=b_train, dw_w=dw_w, block=block)


def _mask(rng, kind: str, shape: tuple, act_min: int, act_max: int):
    if kind == "none":
        return None
    y = rng.integers(-128, 128, size=shape).astype(np.int8)
    y.flat[::5] = act_min
    return y if kind == "int8" else pack_activation_mask(y, act_min=act_min, act_max=act_max)


def random_case(seed: int) -> Case:
    """Conv stride 1/2 (kernel 1, or 3 without dx), depthwise kernels 1/3/5 with strides 1/2,
    SAME/VALID and dilation, depth multipliers 1-3, masks absent/int8/packed, and every
    combination of dx / weight / bias (split weights in most weight cases), cycling with the seed."""
    rng = np.random.default_rng(seed)
    dx, weight, bias = [(True, True, True), (True, False, False), (False, True, False), (False, False, True),
                        (True, True, False), (True, False, True), (False, True, True)][seed % 7]
    pw_stride, pw_kernel = 1 + seed % 2, 1 if dx else int(rng.choice([1, 3]))
    h, w = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    hp, pw_top = resolve_padding("SAME", h, pw_kernel, pw_stride, 1)
    wp, pw_left = resolve_padding("SAME", w, pw_kernel, pw_stride, 1)
    kernel, dw_stride = int(rng.choice([1, 3, 5])), 1 + (seed // 2) % 2
    dilation = 1 if kernel == 1 else int(rng.choice([1, 2]))
    padding = "VALID" if (kernel - 1) * dilation < min(hp, wp) and rng.random() < 0.3 else "SAME"
    ho, pad_top = resolve_padding(padding, hp, kernel, dw_stride, dilation)
    wo, pad_left = resolve_padding(padding, wp, kernel, dw_stride, dilation)
    c, m, i = int(rng.choice([1, 3, 5, 6])), 1 + seed % 3, int(rng.choice([1, 2, 3, 5]))
    dw_act, pw_act = ([int(rng.integers(-128, -40)), int(rng.integers(40, 128))] for _ in range(2))
    depthwise = ConvGradOptions(stride_h=dw_stride, stride_w=dw_stride, dilation_h=dilation, dilation_w=dilation,
                                pad_top=pad_top, pad_left=pad_left, input_height=hp, input_width=wp,
                                input_channels=c, depth_multiplier=m, act_min=int(dw_act[0]), act_max=int(dw_act[1]))
    pointwise = ConvUpdateOptions(stride_h=pw_stride, stride_w=pw_stride, pad_top=pw_top, pad_left=pw_left,
                                  x_zero_point=int(rng.integers(-128, 128)),
                                  x_scale=float(F32(10.0 ** rng.uniform(-3, -1))), act_min=int(pw_act[0]),
                                  act_max=int(pw_act[1]), rounding=Rounding(seed % 2),
                                  weight_param_id=int(rng.integers(0, 100)), bias_param_id=int(rng.integers(0, 100)))
    mask_kinds = ("none", "int8", "packed")
    dy = (rng.standard_normal((1, ho, wo, c * m)) * rng.choice([1e-3, 1.0, 30.0])).astype(F32)
    dy.flat[::7] = 0.0
    if seed % 5 == 4:  # updates a NaN or an infinity reaches are skipped or clamped
        dy.flat[int(rng.integers(0, dy.size))] = np.nan
        dy.flat[int(rng.integers(0, dy.size))] = np.inf
    pw_w = rng.integers(-127, 128, size=(c, pw_kernel, pw_kernel, i)).astype(np.int8)
    split = weight and i > 1 and seed % 4 != 0
    w_train = None
    if weight:
        w_train = rng.integers(-127, 128, size=pw_w.shape[:3] + (int(rng.integers(1, i)),)).astype(np.int8) \
            if split else pw_w
    b_train = rng.integers(-10 ** 6, 10 ** 6, size=int(rng.integers(1, c + 1))).astype(np.int32) if bias else None
    if bias:
        b_train[0] = INT32_MAX - 3
    qas = [(10.0 ** rng.uniform(2, 5, size=c)).astype(F32) for _ in range(2)]
    for scales in qas:
        scales[rng.random(c) < 0.2] = 0.0  # dead channels stay frozen
    return Case(
        depthwise, pointwise, dy, _mask(rng, mask_kinds[seed % 3], dy.shape, depthwise.act_min, depthwise.act_max),
        rng.integers(-127, 128, size=(1, kernel, kernel, c * m)).astype(np.int8),
        (10.0 ** rng.uniform(-3, -1, size=c * m)).astype(F32),
        _mask(rng, mask_kinds[(seed // 3) % 3], (1, hp, wp, c), pointwise.act_min, pointwise.act_max), pw_w,
        (10.0 ** rng.uniform(-3, -1, size=c)).astype(F32), rng.integers(-128, 128, size=(1, h, w, i)).astype(np.int8),
        w_train, qas[0] if weight else None, b_train, qas[1] if bias else None, dx,
        float(F32(10.0 ** rng.uniform(-2, 1))), int(rng.integers(INT32_MIN, INT32_MAX)))


def random_block_case(seed: int, base: Case = None, depthwise_update: tuple = None) -> Case:
    """random_case(seed) (or `base`) in block mode: a projection conv (1×1, or 3×3; strides 1/2;
    split weights sometimes) after the depthwise layer, the gradient reaching its output, and the
    depthwise layer's update (`depthwise_update` = (weight, bias), else weight and bias, bias,
    weight or none, cycling with the seed)."""
    case = random_case(seed) if base is None else base
    rng = np.random.default_rng(1000 + seed)
    _, ho, wo, cm = case.dy.shape
    kernel, stride = (1, 3)[seed % 3 == 2], 1 + (seed // 3) % 2
    hp, pad_top = resolve_padding("SAME", ho, kernel, stride, 1)
    wp, pad_left = resolve_padding("SAME", wo, kernel, stride, 1)
    o = int(rng.integers(1, 6))
    act = [int(rng.integers(-128, -40)), int(rng.integers(40, 128))]
    projection = ConvGradOptions(stride_h=stride, stride_w=stride, pad_top=pad_top, pad_left=pad_left,
                                 input_height=ho, input_width=wo, input_channels=cm, act_min=act[0], act_max=act[1])
    dy = (rng.standard_normal((1, hp, wp, o)) * rng.choice([1e-3, 1.0, 30.0])).astype(F32)
    dy.flat[::7] = 0.0
    if seed % 5 == 3:
        dy.flat[int(rng.integers(0, dy.size))] = np.nan
    proj_w = rng.integers(-127, 128, size=(o, kernel, kernel, cm)).astype(np.int8)
    proj_w_train = rng.integers(-127, 128, size=proj_w.shape[:3] + (int(rng.integers(1, cm)),)).astype(np.int8) \
        if cm > 1 and seed % 4 == 1 else None
    weight, bias = depthwise_update or [(True, True), (False, True), (True, False), (False, False)][(seed // 2) % 4]
    d = case.depthwise
    update = ConvUpdateOptions(**{k: getattr(d, k) for k in ("stride_h", "stride_w", "dilation_h", "dilation_w",
                                                             "pad_top", "pad_left", "act_min", "act_max")},
                               x_zero_point=int(rng.integers(-128, 128)), x_scale=float(F32(10.0 ** rng.uniform(-3, -1))),
                               depthwise=True, depth_multiplier=d.depth_multiplier, rounding=Rounding((seed // 2) % 2),
                               weight_param_id=int(rng.integers(0, 100)), bias_param_id=int(rng.integers(0, 100)))
    qas = [(10.0 ** rng.uniform(2, 5, size=cm)).astype(F32) for _ in range(2)]
    for scales in qas:
        scales[rng.random(cm) < 0.2] = 0.0
    dw_b_train = rng.integers(-10 ** 6, 10 ** 6, size=int(rng.integers(1, cm + 1))).astype(np.int32) if bias else None
    block = Block(_mask(rng, ("none", "int8", "packed")[seed % 3], dy.shape, act[0], act[1]), proj_w, proj_w_train,
                  (10.0 ** rng.uniform(-3, -1, size=o)).astype(F32), table_fields(projection),
                  rng.integers(-128, 128, size=(1, d.input_height, d.input_width, d.input_channels)).astype(np.int8)
                  if weight else None, case.dw_w if weight else None, qas[0] if weight else None, dw_b_train,
                  qas[1] if bias else None, table_fields(update))
    return dataclasses.replace(case, dy=dy, block=block)


def any_case(seed: int) -> Case:
    """random_case for the first SEEDS, random_block_case after them."""
    return random_case(seed) if seed < len(SEEDS) else random_block_case(seed - len(SEEDS))


ALL_SEEDS = range(2 * len(SEEDS))


def unfused(case: Case) -> tuple:
    """(dx or None, g) by the three (block mode: five) ops the fused one replaces; updates case's
    variables."""
    depthwise, pointwise = table_fields(case.depthwise), table_fields(case.pointwise)
    dy, block = case.dy, case.block
    if block is not None:
        projection = {k: v for k, v in block.projection.items() if k != "depth_multiplier"}
        dy = conv_input_grad(dy, block.y, block.w, block.w_train, block.w_scale, **projection)
    g = depthwise_input_grad(dy, case.dw_y, case.dw_w, case.dw_w_scale, **depthwise)
    window = {k: pointwise[k] for k in ("stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left")}
    dx = None
    if case.dx:
        h, w, i = case.x.shape[1:]
        dx = conv_input_grad(g, case.pw_y, case.pw_w, case.w_train if case.split else None, case.pw_w_scale,
                             **window, input_height=h, input_width=w, input_channels=i,
                             act_min=pointwise["act_min"], act_max=pointwise["act_max"])
    if case.w_train is not None or case.b_train is not None:
        conv_grad_update(case.lr, case.step, g, case.pw_y, case.x, case.w_train, case.w_qas, case.b_train, case.b_qas,
                         **pointwise)
    md = activation_mask(g, case.pw_y, pointwise["act_min"], pointwise["act_max"])
    scratch = [md[..., -1].reshape(-1)]
    if block is not None:
        if block.updates:
            conv_grad_update(case.lr, case.step, dy, case.dw_y, block.dw_x, block.dw_w_train, block.dw_w_qas,
                             block.dw_b_train, block.dw_b_qas, **block.depthwise_update)
        m = depthwise["depth_multiplier"]
        md_dw = activation_mask(dy, case.dw_y, depthwise["act_min"], depthwise["act_max"])
        scratch.append(md_dw[..., md_dw.shape[-1] - m:].reshape(-1))
    return dx, np.concatenate(scratch)


def fused(case: Case) -> tuple:
    return depthwise_pointwise_grad(
        case.lr, case.step, case.dy, case.dw_y, case.dw_w, case.dw_w_scale, case.pw_y,
        case.pw_w if case.dx else None, case.pw_w_scale if case.dx else None,
        case.x if case.w_train is not None else None, case.w_train, case.w_qas, case.b_train, case.b_qas,
        depthwise=table_fields(case.depthwise), pointwise=table_fields(case.pointwise),
        input_shape=case.x.shape if case.dx else None, block=case.block)


def assert_same_results(actual: Case, expected: Case, actual_out: tuple, expected_out: tuple) -> None:
    for a, e in zip(actual_out, expected_out):
        if e is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, np.asarray(e).reshape(a.shape))
    for name in ("w_train", "b_train"):
        if getattr(expected, name) is not None:
            np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)
    for name in ("dw_w_train", "dw_b_train"):
        if expected.block is not None and getattr(expected.block, name) is not None:
            np.testing.assert_array_equal(getattr(actual.block, name), getattr(expected.block, name), err_msg=name)


@pytest.mark.parametrize("seed", ALL_SEEDS)
def test_reference_is_the_composition_of_the_ops(seed):
    case = any_case(seed)
    expected, actual = case.copy(), case.copy()
    assert_same_results(actual, expected, fused(actual), unfused(expected))


def _moved(before, after, names) -> bool:
    return any(getattr(before, n) is not None and (getattr(after, n) != getattr(before, n)).any() for n in names)


def test_cases_are_not_vacuous():
    """Guards the comparisons against passing on nothing: most cases move parameters (the others'
    steps round to 0 or hit dead channels) and give a nonzero dx and g."""
    moved = nonzero = updates = dxs = 0
    for seed in ALL_SEEDS:
        case = any_case(seed)
        after = case.copy()
        dx, g = fused(after)
        for kind in ("pointwise", "depthwise"):
            names = ("w_train", "b_train") if kind == "pointwise" else ("dw_w_train", "dw_b_train")
            before, now = (case, after) if kind == "pointwise" else (case.block, after.block)
            if before is not None and any(getattr(before, n) is not None for n in names):
                updates += 1
                moved += _moved(before, now, names)
        dxs += case.dx
        nonzero += case.dx and bool(np.any(dx != 0)) and bool(np.any(g != 0))
    assert moved >= 0.6 * updates and nonzero >= 0.7 * dxs


# ---------------------------------------------------------------- micro/core

P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("depthwise_pointwise") / "core_shim.so"
    return build_library([REPO / "tests" / "cc" / "core_shim.cc", *CORE_SOURCES], out,
                         {"shim_depthwise_pointwise_grad": ([P, P, P, F, F, F, P], None)})


def geometry(in_hw, out_hw, kernel_hw, options) -> list:
    return [*in_hw, *out_hw, *kernel_hw, options.stride_h, options.stride_w, options.dilation_h, options.dilation_w,
            options.pad_top, options.pad_left]


def run_core(core, case: Case) -> tuple:
    d, p = case.depthwise, case.pointwise
    h, w, i = case.x.shape[1:]
    hp, wp, c = d.input_height, d.input_width, d.input_channels
    dw_out = case.dy.shape[1:3] if case.block is None else (case.block.projection["input_height"],
                                                             case.block.projection["input_width"])
    dw_ints = geometry((hp, wp), dw_out, case.dw_w.shape[1:3], d) + [
        c, d.depth_multiplier, d.act_min, d.act_max, int(getattr(case.dw_y, "dtype", None) == np.uint8)]
    weight = case.w_train
    pw_ints = geometry((h, w), (hp, wp), case.pw_w.shape[1:3], p) + [
        p.act_min, p.act_max, int(getattr(case.pw_y, "dtype", None) == np.uint8), i,
        i if weight is None else weight.shape[-1], p.x_zero_point, int(p.rounding), case.step, p.weight_param_id,
        p.bias_param_id, 0 if case.b_train is None else case.b_train.size]
    dx = np.full(case.x.shape, np.nan, F32) if case.dx else None
    block = case.block
    g = np.full(hp * wp + (0 if block is None else case.dw_y_size // c), np.nan, F32)
    tensors = [case.dy, case.dw_y, case.dw_w, case.dw_w_scale, case.pw_y, case.pw_w if case.dx else None,
               case.pw_w_scale if case.dx else None, case.x if weight is not None else None, weight, case.w_qas,
               case.b_train, case.b_qas, dx, g]
    proj_ints, dw_x_scale = None, 0.0
    if block is not None:
        q, u = block.projection, block.depthwise_update
        proj_ints = np.array(geometry((q["input_height"], q["input_width"]), case.dy.shape[1:3], block.w.shape[1:3],
                                      ConvGradOptions(**q)) + [
            q["act_min"], q["act_max"], int(getattr(block.y, "dtype", None) == np.uint8), block.w.shape[0],
            0 if block.w_train is None else block.w_train.shape[-1], u["x_zero_point"], int(u["rounding"]),
            u["weight_param_id"], u["bias_param_id"], 0 if block.dw_b_train is None else block.dw_b_train.size],
            np.int32)
        dw_x_scale = u["x_scale"]
        tensors += [block.y, block.w, block.w_train, block.w_scale, block.dw_x, block.dw_w_train, block.dw_w_qas,
                    block.dw_b_train, block.dw_b_qas]
    pointers = (ctypes.c_void_p * len(tensors))(*map(ptr, tensors))
    core.shim_depthwise_pointwise_grad(ptr(np.array(dw_ints, np.int32)), ptr(np.array(pw_ints, np.int32)),
                                       ptr(proj_ints), p.x_scale, dw_x_scale, case.lr, pointers)
    return dx, g


@pytest.mark.parametrize("seed", ALL_SEEDS)
def test_core_matches_reference(core, seed):
    case = any_case(seed)
    expected, actual = case.copy(), case.copy()
    assert_same_results(actual, expected, run_core(core, actual), fused(expected))



# ---------------------------------------------------------------- micro/kernels (fake context)

from test_micro_kernels import (PREPARE_FAILED, Call, Const, _drop_inputs, _set_input, _set_option,  # noqa: E402
                                _set_output, kernels, run_ok)  # noqa: F401 (kernels: the fixture)


def _const(value):
    return None if value is None else Const(value)


def kernel_call(case: Case, label: int = 1) -> Call:
    """The op on `case`'s tensors: constants where the converter puts flash constants."""
    weight, bias, block = case.w_train is not None, case.b_train is not None, case.block
    updates = weight or bias or (block is not None and block.updates)
    pw_w = None
    if case.dx:
        pw_w = case.pw_w if case.pw_w is case.w_train else Const(case.pw_w)
    dw_w = case.dw_w if block is not None and block.dw_w_train is case.dw_w else Const(case.dw_w)
    inputs = [np.array([label], np.int32), np.array([case.lr], F32) if updates else None,
              np.array([1, case.step], np.int32) if updates else None, case.dy, case.dw_y, dw_w,
              Const(case.dw_w_scale), case.pw_y, pw_w, Const(case.pw_w_scale) if case.dx else None,
              case.x if weight else None, case.w_train, Const(case.w_qas) if weight else None, case.b_train,
              Const(case.b_qas) if bias else None]
    options = DepthwisePointwiseGradOptions(depthwise=case.depthwise, pointwise=case.pointwise)
    if block is not None:
        inputs += [block.y, Const(block.w), block.w_train, Const(block.w_scale), block.dw_x, block.dw_w_train,
                   _const(block.dw_w_qas), block.dw_b_train, _const(block.dw_b_qas)]
        options.projection = ConvGradOptions(**block.projection)
        options.depthwise_update = ConvUpdateOptions(**block.depthwise_update)
    while inputs[-1] is None:
        inputs.pop()
    d = case.depthwise
    outputs = [np.full(d.input_height * d.input_width + case.dw_y_size // d.input_channels * (block is not None),
                       np.nan, F32)]
    outputs += [np.full(case.x.shape, np.nan, F32)] if case.dx else []
    return Call("TFLT_DEPTHWISE_POINTWISE_GRAD", options, inputs, outputs)


@pytest.mark.parametrize("seed", ALL_SEEDS)
def test_kernel_matches_reference(kernels, seed):
    case = any_case(seed)
    expected, actual = case.copy(), case.copy()
    call = kernel_call(actual)
    run_ok(kernels, call)
    g, dx = (call.outputs + [None])[:2]
    assert_same_results(actual, expected, (dx, g), fused(expected))


def test_negative_label_leaves_everything_untouched(kernels):
    case = random_case(0)
    call = kernel_call(case, label=-1)
    before = [np.copy(getattr(v, "array", v)) for v in call.inputs[1:] + call.outputs if v is not None]
    run_ok(kernels, call)
    after = [getattr(v, "array", v) for v in call.inputs[1:] + call.outputs if v is not None]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def _case_with(seed: int):
    return lambda: kernel_call(random_case(seed))


def _set_pointwise(**changes):
    def mutate(call):
        call.options = dataclasses.replace(call.options, pointwise=dataclasses.replace(call.options.pointwise,
                                                                                       **changes))
    return mutate


def _set_depthwise(**changes):
    def mutate(call):
        call.options = dataclasses.replace(call.options, depthwise=dataclasses.replace(call.options.depthwise,
                                                                                       **changes))
    return mutate


# random_case(0): dx, weight (ratio 1) and bias; (1): dx only; (2): weight of a 3×3 conv only; (3): bias
# only; (4): dx and weight, both masks int8.
def _grow(index, dim=-1, dtype=None, const=False):
    """Replaces input `index` by one of its dtype (or `dtype`) with dimension `dim` one larger."""
    def mutate(call):
        old = getattr(call.inputs[index], "array", call.inputs[index])
        shape = list(old.shape)
        shape[dim] += 1
        new = np.zeros(shape, dtype or old.dtype)
        call.inputs[index] = Const(new) if const or isinstance(call.inputs[index], Const) else new
    return mutate


def _grow_output(index, dim=-1):
    def mutate(call):
        shape = list(call.outputs[index].shape)
        shape[dim] += 1
        call.outputs[index] = np.zeros(shape, F32)
    return mutate


BAD_GRAPHS = {
    "label_type": (_case_with(0), _set_input(0, np.zeros(1, F32)), "label must be int32"),
    "lr_missing": (_case_with(0), _set_input(1, None), "missing input 1 (lr)"),
    "state_shape": (_case_with(3), _set_input(2, np.zeros(3, np.int32)), "state must have shape [2]"),
    "dy_channels": (_case_with(0), _grow(3), "dy is"),
    "dy_type": (_case_with(0), lambda call: call.inputs.__setitem__(3, call.inputs[3].astype(np.int8)),
                "dy must be float32"),
    "dw_y_shape": (_case_with(4), _grow(4, dim=1), "y is"),
    "dw_w_channels": (_case_with(0), _set_depthwise(depth_multiplier=2), "w's last dim"),
    "dw_w_scale_size": (_case_with(0), _grow(6), "dw_w_scale must have shape"),
    "depthwise_geometry": (_case_with(0), _set_depthwise(stride_h=0), "strides"),
    "depthwise_input_size": (_case_with(0), _set_depthwise(input_height=40), "g must have shape"),
    "g_size": (_case_with(0), _grow_output(0), "g must have shape"),
    "pw_y_packed_size": (_case_with(0), _set_input(7, np.zeros(3, np.uint8)), "y (a packed mask) must have shape"),
    "pw_act_range": (_case_with(0), _set_pointwise(act_min=100, act_max=50), "act_min must not exceed"),
    "pointwise_depthwise": (_case_with(0), _set_pointwise(depthwise=True), "must describe a conv"),
    "pw_w_missing": (_case_with(1), _set_input(8, None), "missing input 8 (pw_w)"),
    "pw_w_kernel": (_case_with(1), lambda call: call.inputs.__setitem__(
        8, Const(np.zeros(call.inputs[8].array.shape[:1] + (3, 3) + call.inputs[8].array.shape[3:], np.int8))),
                    "pw_w must be [C, 1, 1, I]"),
    "pw_w_scale_size": (_case_with(1), _grow(9, const=True), "pw_w_scale must have shape"),
    "dx_channels": (_case_with(1), _grow_output(1), "pw_w must be [C, 1, 1, I]"),
    "dx_too_small": (_case_with(1), lambda call: call.outputs.__setitem__(1, np.zeros((1, 1, 4, 1), F32)),
                     "output is larger than the input"),
    "w_train_too_wide": (_case_with(0), _grow(11), "the weight must be"),
    "w_qas_missing": (_case_with(0), _set_input(12, None), "go together"),
    "x_type": (_case_with(2), lambda call: call.inputs.__setitem__(10, call.inputs[10].astype(F32)),
               "x must be int8"),
    "x_differs_from_dx": (_case_with(0), _grow(10, dim=2), "x is"),
    "bias_too_long": (_case_with(3), lambda call: call.inputs.__setitem__(
        13, np.zeros(call.options.depthwise.input_channels + 1, np.int32)), "b_train must be"),
    "nothing": (_case_with(3), _drop_inputs(2), "nothing to compute"),
    "too_many_outputs": (_case_with(1), lambda call: call.outputs.append(np.zeros(1, F32)), "expected"),
}



def _block_case_with(seed: int):
    return lambda: kernel_call(random_block_case(seed))


def _set_projection(**changes):
    def mutate(call):
        call.options.projection = dataclasses.replace(call.options.projection, **changes)
    return mutate


def _set_depthwise_update(**changes):
    def mutate(call):
        call.options.depthwise_update = dataclasses.replace(call.options.depthwise_update, **changes)
    return mutate


def _with_input(index, value):
    """Pads the inputs with absent ones up to `index` and sets it."""
    def mutate(call):
        call.inputs += [None] * (index + 1 - len(call.inputs))
        call.inputs[index] = value
    return mutate


# random_block_case(0): no mask on the projection, its weight whole, depthwise weight and bias
# updates; (1): int8 masks, the projection's weight split, depthwise weight and bias updates;
# (2): a 3×3 projection, packed masks, depthwise bias update only.
BAD_GRAPHS.update({
    "proj_w_channels": (_block_case_with(0), _grow(16, const=True), "proj_w must be [O, kh, kw, C*M]"),
    "proj_dy_channels": (_block_case_with(0), _grow(3), "proj_w must be [O, kh, kw, C*M]"),
    "proj_w_scale_size": (_block_case_with(0), _grow(18, const=True), "proj_w_scale must have shape"),
    "proj_w_train_too_wide": (_block_case_with(1), lambda call: call.inputs.__setitem__(
        17, np.zeros(call.inputs[16].array.shape[:3] + (call.inputs[16].array.shape[3] + 1,), np.int8)),
                              "proj_w_train must have w's shape"),
    "proj_y_shape": (_block_case_with(1), _grow(15, dim=1), "y is"),
    "projection_geometry": (_block_case_with(2), _set_projection(stride_h=0), "strides"),
    "projection_input_size": (_block_case_with(1), _set_projection(input_height=9), "y is"),
    "block_g_size": (_block_case_with(0), _grow_output(0), "g must have shape"),
    "depthwise_update_not_depthwise": (_block_case_with(0), _set_depthwise_update(depthwise=False),
                                       "must describe the depthwise layer"),
    "depthwise_update_act_range": (_block_case_with(2), _set_depthwise_update(act_max=1),
                                   "must describe the depthwise layer"),
    "dw_x_missing": (_block_case_with(0), _set_input(19, None), "missing input 19 (x)"),
    "dw_w_qas_missing": (_block_case_with(1), _set_input(21, None), "go together"),
    "dw_b_train_too_long": (_block_case_with(3), _grow(22), "b_train must be"),
    "block_input_without_proj_w": (_case_with(0), _with_input(22, np.zeros(1, np.int32)),
                                   "inputs after b_qas need proj_w"),
    "projection_options_without_proj_w": (_block_case_with(0), _set_input(16, None), "block mode needs both"),
    "proj_w_without_projection_options": (_block_case_with(0), _set_projection(input_channels=0),
                                          "block mode needs both"),
    "dw_w_train_shape": (_block_case_with(0), lambda call: call.inputs.__setitem__(
        20, np.zeros(call.inputs[20].shape[:1] + (1, 1) + call.inputs[20].shape[3:], np.int8)),
                         "dw_w_train and dw_w must have the same shape"),
    "dw_x_shape": (_block_case_with(0), _grow(19, dim=1), "dw_x is"),
    "depthwise_update_window": (_block_case_with(0), _set_depthwise_update(pad_top=1),
                                "must describe the depthwise layer"),
})


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_prepare_rejects_bad_graph(kernels, case):
    build, mutate, fragment = BAD_GRAPHS[case]
    run_ok(kernels, build())  # the unmutated graph is fine
    call = build()
    mutate(call)
    code, message = call.run(kernels)
    assert code == PREPARE_FAILED, message
    assert fragment in message
    assert message.startswith(call.op)


# ---------------------------------------------------------------- the stock TFLM interpreter

def _tensor(name, value=None, shape=None, dtype=None, variable=False):
    if value is not None:
        return ir.Tensor(name, value.shape, value.dtype, data=value)
    return ir.Tensor(name, shape, dtype, is_variable=variable)


def _custom(kind, inputs, outputs, options) -> ir.Op:
    return ir.Op(kind, inputs, outputs, custom=True, custom_options=options.to_bytes())


@pytest.mark.parametrize("split, packed, block", [(True, True, False), (False, False, False),
                                                  (True, True, True), (False, False, True)])
def test_tflm_runs_it_like_the_ops_it_fuses_and_the_reference(split, packed, block):
    """One graph holds the fused op and the three (block mode: five) ops it replaces, each on its
    own copy of the variables (TFLT_TRAIN_INIT seeds both from the same constants): a training
    step gives the same dx and variables in both and in numpy; an inference step changes nothing."""
    case = random_case(7)
    assert case.dx and case.w_train is not None and case.b_train is not None
    rng = np.random.default_rng(8)
    c, i = case.pw_w.shape[0], case.pw_w.shape[-1]
    if not split:
        case = dataclasses.replace(case, w_train=case.pw_w)
    if block:
        case = random_block_case(7, case, depthwise_update=(True, True))
    d, b = case.depthwise, case.block
    cm = d.input_channels * d.depth_multiplier
    dw_out = case.dy.shape[1:3] if not block else (b.projection["input_height"], b.projection["input_width"])
    label, lr, dy, x = (_tensor("label", shape=(1,), dtype=np.int32), _tensor("lr", shape=(1,), dtype=np.float32),
                        _tensor("dy", shape=case.dy.shape, dtype=np.float32), _tensor("x", shape=case.x.shape,
                                                                                     dtype=np.int8))
    dw_y = _tensor("dw_y", shape=(1, *dw_out, cm), dtype=np.int8)
    pw_y = _tensor("pw_y", shape=(1, d.input_height, d.input_width, c), dtype=np.int8)
    state = _tensor("state", shape=(2,), dtype=np.int32, variable=True)
    values = {"dw_w": case.dw_w, "dw_w_scale": case.dw_w_scale, "pw_w": case.pw_w, "pw_w_scale": case.pw_w_scale,
              "w_src": case.w_train, "w_qas": case.w_qas, "b_src": case.b_train, "b_qas": case.b_qas}
    if block:
        values.update(proj_w=b.w, proj_w_train=b.w_train, proj_w_scale=b.w_scale, dw_w_qas=b.dw_w_qas,
                      dw_b_src=b.dw_b_train, dw_b_qas=b.dw_b_qas)
    consts = {name: _tensor(name, np.asarray(value)) for name, value in values.items() if value is not None}
    trained = [("w_src", "w_train", case.w_train), ("b_src", "b_train", case.b_train)]
    if block:
        trained += [("dw_w", "dw_w_train", b.dw_w_train), ("dw_b_src", "dw_b_train", b.dw_b_train)]
    copies = [{name: _tensor(f"{name}{k}", shape=value.shape, dtype=value.dtype, variable=True)
               for _, name, value in trained} for k in range(2)]
    init = [label, state] + [t for k in range(2) for src, name, _ in trained for t in (consts[src], copies[k][name])]
    ops = [_custom("TFLT_TRAIN_INIT", init, [], TrainInitOptions())]
    mask = pw_y
    if packed:
        mask = _tensor("pw_y/mask", shape=((pw_y.size + 7) // 8,), dtype=np.uint8)
        ops.append(_custom("TFLT_ACTIVATION_MASK", [pw_y], [mask],
                           ActivationMaskOptions(act_min=case.pointwise.act_min, act_max=case.pointwise.act_max)))
    fused_vars, unfused_vars = copies
    scratch = d.input_height * d.input_width + (dw_out[0] * dw_out[1] * d.depth_multiplier if block else 0)
    g = _tensor("g", shape=(scratch,), dtype=np.float32)
    g_pw1 = _tensor("g_pw1", shape=pw_y.shape, dtype=np.float32)
    dx = [_tensor(f"dx{k}", shape=case.x.shape, dtype=np.float32) for k in range(2)]
    pw_w = lambda w: consts["pw_w"] if split else w  # noqa: E731 (ratio 1: the variable is the weight)
    dw_w = lambda v: v["dw_w_train"] if block else consts["dw_w"]  # noqa: E731
    inputs = [label, lr, state, dy, dw_y, dw_w(fused_vars), consts["dw_w_scale"], mask, pw_w(fused_vars["w_train"]),
              consts["pw_w_scale"], x, fused_vars["w_train"], consts["w_qas"], fused_vars["b_train"], consts["b_qas"]]
    options = DepthwisePointwiseGradOptions(depthwise=d, pointwise=case.pointwise)
    graph_inputs = [label, lr, dy, dw_y, pw_y, x]
    dw_dy = dy
    if block:
        proj_y, dw_x = (_tensor("proj_y", shape=case.dy.shape, dtype=np.int8),
                        _tensor("dw_x", shape=b.dw_x.shape, dtype=np.int8))
        graph_inputs += [proj_y, dw_x]
        inputs += [proj_y, consts["proj_w"], consts.get("proj_w_train"), consts["proj_w_scale"], dw_x,
                   fused_vars["dw_w_train"], consts["dw_w_qas"], fused_vars["dw_b_train"], consts["dw_b_qas"]]
        options.projection = ConvGradOptions(**b.projection)
        options.depthwise_update = ConvUpdateOptions(**b.depthwise_update)
        dw_dy = _tensor("dw_dy", shape=dw_y.shape, dtype=np.float32)
        ops.append(_custom("TFLT_CONV_INPUT_GRAD", [label, dy, proj_y, consts["proj_w"], consts.get("proj_w_train"),
                                                    consts["proj_w_scale"]], [dw_dy], options.projection))
    ops.insert(len(ops) - block, _custom("TFLT_DEPTHWISE_POINTWISE_GRAD", inputs, [g, dx[0]], options))
    window = {k: getattr(case.pointwise, k) for k in ("stride_h", "stride_w", "pad_top", "pad_left")}
    w_unfused = unfused_vars["w_train"]
    ops += [_custom("TFLT_DEPTHWISE_INPUT_GRAD", [label, dw_dy, dw_y, dw_w(unfused_vars), consts["dw_w_scale"]],
                    [g_pw1], d),
            _custom("TFLT_CONV_INPUT_GRAD", [label, g_pw1, mask, pw_w(w_unfused), w_unfused if split else None,
                                             consts["pw_w_scale"]], [dx[1]],
                    ConvGradOptions(**window, input_height=case.x.shape[1], input_width=case.x.shape[2],
                                    input_channels=i, act_min=case.pointwise.act_min,
                                    act_max=case.pointwise.act_max)),
            _custom("TFLT_CONV_GRAD_UPDATE", [label, lr, state, g_pw1, mask, x, w_unfused, consts["w_qas"],
                                              unfused_vars["b_train"], consts["b_qas"]], [], case.pointwise)]
    if block:
        ops.append(_custom("TFLT_CONV_GRAD_UPDATE", [label, lr, state, dw_dy, dw_y, dw_x, unfused_vars["dw_w_train"],
                                                     consts["dw_w_qas"], unfused_vars["dw_b_train"],
                                                     consts["dw_b_qas"]], [], options.depthwise_update))
    tensors = {id(t): t for op in ops for t in op.inputs + op.outputs if t is not None}
    graph = ir.Graph(ops, graph_inputs, dx + [g], list(tensors.values()))
    index = {t.name: k for k, t in enumerate(graph.referenced_tensors())}
    y_values = [rng.integers(-128, 128, size=t.shape).astype(np.int8) for t in graph_inputs[3:5]]
    expected = dataclasses.replace(case.copy(), dw_y=y_values[0], pw_y=y_values[1], step=1)
    feed = [np.array([0], np.int32), np.array([case.lr], F32), case.dy, *y_values, case.x]
    if block:
        proj_y_value = rng.integers(-128, 128, size=case.dy.shape).astype(np.int8)
        expected.block = dataclasses.replace(expected.block, y=proj_y_value)
        feed += [proj_y_value, b.dw_x]
    dx_expected, g_expected = fused(expected)
    want = {"w_train": expected.w_train, "b_train": expected.b_train}
    if block:
        want.update(dw_w_train=expected.block.dw_w_train, dw_b_train=expected.block.dw_b_train)
    with TflmSession(ir.emit(graph), preserve_all_tensors=True) as session:
        dx_fused, dx_unfused, g_value = session.invoke(feed)
        np.testing.assert_array_equal(dx_fused, dx_expected)
        np.testing.assert_array_equal(dx_unfused, dx_expected)
        np.testing.assert_array_equal(g_value, g_expected)
        for name, value in want.items():
            for k in range(2):
                np.testing.assert_array_equal(session.tensor(index[f"{name}{k}"]).reshape(value.shape), value,
                                              err_msg=f"{name}{k}")
        assert (expected.w_train != case.w_train).any() and (dx_expected != 0).any()
        if block:
            assert (expected.block.dw_w_train != b.dw_w_train).any()
        session.invoke([np.array([-1], np.int32)] + feed[1:])
        np.testing.assert_array_equal(session.tensor(index["w_train0"]).reshape(case.w_train.shape),
                                      expected.w_train)
