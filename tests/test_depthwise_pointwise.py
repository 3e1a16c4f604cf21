"""TFLT_DEPTHWISE_POINTWISE_GRAD: its numpy reference against the composition of the three ops it
replaces (TFLT_DEPTHWISE_INPUT_GRAD → TFLT_CONV_INPUT_GRAD → TFLT_CONV_GRAD_UPDATE), and
micro/core's DepthwisePointwiseGrad against that reference, bit for bit.
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
from tflm_train.kernels_grad.depthwise_pointwise import depthwise_pointwise_grad
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

    @property
    def split(self) -> bool:
        return self.w_train is not None and self.w_train is not self.pw_w

    def copy(self) -> "Case":
        w_train = None if self.w_train is None else self.w_train.copy()
        pw_w = w_train if self.w_train is self.pw_w else self.pw_w
        b_train = None if self.b_train is None else self.b_train.copy()
        return dataclasses.replace(self, w_train=w_train, pw_w=pw_w, b_train=b_train)


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


def unfused(case: Case) -> tuple:
    """(dx or None, g) by the three ops the fused one replaces; updates case's variables."""
    depthwise, pointwise = table_fields(case.depthwise), table_fields(case.pointwise)
    g = depthwise_input_grad(case.dy, case.dw_y, case.dw_w, case.dw_w_scale, **depthwise)
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
    return dx, md[..., -1].reshape(-1)


def fused(case: Case) -> tuple:
    return depthwise_pointwise_grad(
        case.lr, case.step, case.dy, case.dw_y, case.dw_w, case.dw_w_scale, case.pw_y,
        case.pw_w if case.dx else None, case.pw_w_scale if case.dx else None,
        case.x if case.w_train is not None else None, case.w_train, case.w_qas, case.b_train, case.b_qas,
        depthwise=table_fields(case.depthwise), pointwise=table_fields(case.pointwise),
        input_shape=case.x.shape if case.dx else None)


def assert_same_results(actual: Case, expected: Case, actual_out: tuple, expected_out: tuple) -> None:
    for a, e in zip(actual_out, expected_out):
        if e is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, np.asarray(e).reshape(a.shape))
    for name in ("w_train", "b_train"):
        if getattr(expected, name) is not None:
            np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_is_the_composition_of_the_three_ops(seed):
    case = random_case(seed)
    expected, actual = case.copy(), case.copy()
    assert_same_results(actual, expected, fused(actual), unfused(expected))


def test_cases_are_not_vacuous():
    """Guards the comparisons against passing on nothing: most cases move parameters (the others'
    steps round to 0 or hit dead channels) and give a nonzero dx and g."""
    moved = nonzero = updates = dxs = 0
    for seed in SEEDS:
        case = random_case(seed)
        after = case.copy()
        dx, g = fused(after)
        updates += case.w_train is not None or case.b_train is not None
        moved += any(getattr(case, name) is not None and (getattr(after, name) != getattr(case, name)).any()
                     for name in ("w_train", "b_train"))
        dxs += case.dx
        nonzero += case.dx and bool(np.any(dx != 0)) and bool(np.any(g != 0))
    assert moved >= 0.6 * updates and nonzero >= 0.7 * dxs


# ---------------------------------------------------------------- micro/core

P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("depthwise_pointwise") / "core_shim.so"
    return build_library([REPO / "tests" / "cc" / "core_shim.cc", *CORE_SOURCES], out,
                         {"shim_depthwise_pointwise_grad": ([P, P, F, F, P], None)})


def geometry(in_hw, out_hw, kernel_hw, options) -> list:
    return [*in_hw, *out_hw, *kernel_hw, options.stride_h, options.stride_w, options.dilation_h, options.dilation_w,
            options.pad_top, options.pad_left]


def run_core(core, case: Case) -> tuple:
    d, p = case.depthwise, case.pointwise
    h, w, i = case.x.shape[1:]
    hp, wp, c = d.input_height, d.input_width, d.input_channels
    dw_ints = geometry((hp, wp), case.dy.shape[1:3], case.dw_w.shape[1:3], d) + [
        c, d.depth_multiplier, d.act_min, d.act_max, int(getattr(case.dw_y, "dtype", None) == np.uint8)]
    weight = case.w_train
    pw_ints = geometry((h, w), (hp, wp), case.pw_w.shape[1:3], p) + [
        p.act_min, p.act_max, int(getattr(case.pw_y, "dtype", None) == np.uint8), i,
        i if weight is None else weight.shape[-1], p.x_zero_point, int(p.rounding), case.step, p.weight_param_id,
        p.bias_param_id, 0 if case.b_train is None else case.b_train.size]
    dx = np.full(case.x.shape, np.nan, F32) if case.dx else None
    g = np.full(hp * wp, np.nan, F32)
    tensors = [case.dy, case.dw_y, case.dw_w, case.dw_w_scale, case.pw_y, case.pw_w if case.dx else None,
               case.pw_w_scale if case.dx else None, case.x if weight is not None else None, weight, case.w_qas,
               case.b_train, case.b_qas, dx, g]
    pointers = (ctypes.c_void_p * len(tensors))(*map(ptr, tensors))
    core.shim_depthwise_pointwise_grad(ptr(np.array(dw_ints, np.int32)), ptr(np.array(pw_ints, np.int32)),
                                       p.x_scale, case.lr, pointers)
    return dx, g


@pytest.mark.parametrize("seed", SEEDS)
def test_core_matches_reference(core, seed):
    case = random_case(seed)
    expected, actual = case.copy(), case.copy()
    assert_same_results(actual, expected, run_core(core, actual), fused(expected))


# ---------------------------------------------------------------- micro/kernels (fake context)

from test_micro_kernels import (PREPARE_FAILED, Call, Const, _drop_inputs, _set_input, _set_option,  # noqa: E402
                                _set_output, kernels, run_ok)  # noqa: F401 (kernels: the fixture)


def kernel_call(case: Case, label: int = 1) -> Call:
    """The op on `case`'s tensors: constants where the converter puts flash constants."""
    weight, bias = case.w_train is not None, case.b_train is not None
    updates = weight or bias
    pw_w = None
    if case.dx:
        pw_w = case.pw_w if case.pw_w is case.w_train else Const(case.pw_w)
    inputs = [np.array([label], np.int32), np.array([case.lr], F32) if updates else None,
              np.array([1, case.step], np.int32) if updates else None, case.dy, case.dw_y, Const(case.dw_w),
              Const(case.dw_w_scale), case.pw_y, pw_w, Const(case.pw_w_scale) if case.dx else None,
              case.x if weight else None, case.w_train, Const(case.w_qas) if weight else None, case.b_train,
              Const(case.b_qas) if bias else None]
    while inputs[-1] is None:
        inputs.pop()
    d = case.depthwise
    outputs = [np.full(d.input_height * d.input_width, np.nan, F32)]
    outputs += [np.full(case.x.shape, np.nan, F32)] if case.dx else []
    return Call("TFLT_DEPTHWISE_POINTWISE_GRAD",
                DepthwisePointwiseGradOptions(depthwise=case.depthwise, pointwise=case.pointwise), inputs, outputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_matches_reference(kernels, seed):
    case = random_case(seed)
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


@pytest.mark.parametrize("split, packed", [(True, True), (False, False)])
def test_tflm_runs_it_like_the_three_ops_and_the_reference(split, packed):
    """One graph holds the fused op and the three ops it replaces, each on its own copy of the
    variables (TFLT_TRAIN_INIT seeds both from the same constants): a training step gives the
    same dx and variables in both and in numpy; an inference step changes nothing."""
    case = random_case(7)
    assert case.dx and case.w_train is not None and case.b_train is not None
    rng = np.random.default_rng(8)
    c, i = case.pw_w.shape[0], case.pw_w.shape[-1]
    if not split:
        case = dataclasses.replace(case, w_train=case.pw_w)
    label, lr, dy, x = (_tensor("label", shape=(1,), dtype=np.int32), _tensor("lr", shape=(1,), dtype=np.float32),
                        _tensor("dy", shape=case.dy.shape, dtype=np.float32), _tensor("x", shape=case.x.shape,
                                                                                     dtype=np.int8))
    d = case.depthwise
    dw_y = _tensor("dw_y", shape=case.dy.shape, dtype=np.int8)
    pw_y = _tensor("pw_y", shape=(1, d.input_height, d.input_width, c), dtype=np.int8)
    state = _tensor("state", shape=(2,), dtype=np.int32, variable=True)
    consts = {name: _tensor(name, np.asarray(value)) for name, value in (
        ("dw_w", case.dw_w), ("dw_w_scale", case.dw_w_scale), ("pw_w", case.pw_w), ("pw_w_scale", case.pw_w_scale),
        ("w_src", case.w_train), ("w_qas", case.w_qas), ("b_src", case.b_train), ("b_qas", case.b_qas))}
    copies = [(_tensor(f"w_train{k}", shape=case.w_train.shape, dtype=np.int8, variable=True),
               _tensor(f"b_train{k}", shape=case.b_train.shape, dtype=np.int32, variable=True)) for k in range(2)]
    init = [label, state] + [t for w, b in copies for t in (consts["w_src"], w, consts["b_src"], b)]
    ops = [_custom("TFLT_TRAIN_INIT", init, [], TrainInitOptions())]
    mask = pw_y
    if packed:
        mask = _tensor("pw_y/mask", shape=((pw_y.size + 7) // 8,), dtype=np.uint8)
        ops.append(_custom("TFLT_ACTIVATION_MASK", [pw_y], [mask],
                           ActivationMaskOptions(act_min=case.pointwise.act_min, act_max=case.pointwise.act_max)))
    (w_fused, b_fused), (w_unfused, b_unfused) = copies
    g, g_pw1 = _tensor("g", shape=(d.input_height * d.input_width,), dtype=np.float32), \
        _tensor("g_pw1", shape=pw_y.shape, dtype=np.float32)
    dx = [_tensor(f"dx{k}", shape=case.x.shape, dtype=np.float32) for k in range(2)]
    pw_w = lambda w: consts["pw_w"] if split else w  # noqa: E731 (ratio 1: the variable is the weight)
    ops.append(_custom("TFLT_DEPTHWISE_POINTWISE_GRAD",
                       [label, lr, state, dy, dw_y, consts["dw_w"], consts["dw_w_scale"], mask, pw_w(w_fused),
                        consts["pw_w_scale"], x, w_fused, consts["w_qas"], b_fused, consts["b_qas"]], [g, dx[0]],
                       DepthwisePointwiseGradOptions(depthwise=d, pointwise=case.pointwise)))
    window = {k: getattr(case.pointwise, k) for k in ("stride_h", "stride_w", "pad_top", "pad_left")}
    ops += [_custom("TFLT_DEPTHWISE_INPUT_GRAD", [label, dy, dw_y, consts["dw_w"], consts["dw_w_scale"]], [g_pw1], d),
            _custom("TFLT_CONV_INPUT_GRAD", [label, g_pw1, mask, pw_w(w_unfused), w_unfused if split else None,
                                             consts["pw_w_scale"]], [dx[1]],
                    ConvGradOptions(**window, input_height=case.x.shape[1], input_width=case.x.shape[2],
                                    input_channels=i, act_min=case.pointwise.act_min,
                                    act_max=case.pointwise.act_max)),
            _custom("TFLT_CONV_GRAD_UPDATE", [label, lr, state, g_pw1, mask, x, w_unfused, consts["w_qas"], b_unfused,
                                              consts["b_qas"]], [], case.pointwise)]
    inputs = [label, lr, dy, dw_y, pw_y, x]
    tensors = {id(t): t for op in ops for t in op.inputs + op.outputs if t is not None}
    graph = ir.Graph(ops, inputs, dx + [g], list(tensors.values()))
    index = {t.name: k for k, t in enumerate(graph.referenced_tensors())}
    dw_y_value, pw_y_value = (rng.integers(-128, 128, size=t.shape).astype(np.int8) for t in (dw_y, pw_y))
    expected = dataclasses.replace(case.copy(), dw_y=dw_y_value, pw_y=pw_y_value, step=1)
    dx_expected, g_expected = fused(expected)
    values = [np.array([0], np.int32), np.array([case.lr], F32), case.dy, dw_y_value, pw_y_value, case.x]
    with TflmSession(ir.emit(graph), preserve_all_tensors=True) as session:
        dx_fused, dx_unfused, g_value = session.invoke(values)
        np.testing.assert_array_equal(dx_fused, dx_expected)
        np.testing.assert_array_equal(dx_unfused, dx_expected)
        np.testing.assert_array_equal(g_value, g_expected)
        for name, want in (("w_train0", expected.w_train), ("w_train1", expected.w_train),
                           ("b_train0", expected.b_train), ("b_train1", expected.b_train)):
            np.testing.assert_array_equal(session.tensor(index[name]).reshape(want.shape), want, err_msg=name)
        assert (expected.w_train != case.w_train).any() and (dx_expected != 0).any()
        session.invoke([np.array([-1], np.int32)] + values[1:])
        np.testing.assert_array_equal(session.tensor(index["w_train0"]).reshape(case.w_train.shape),
                                      expected.w_train)
