"""Pieces shared by the training ops' reference semantics (docs/training_ops.md).

Float determinism: every float expression below is float32, one IEEE operation
at a time, in the contract's order. numpy vectorises only over independent
elements; reductions are explicit Python loops in the contract's order.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.errors import UserError
from tflm_train.reference.quantization import requantize_int8
from tflm_train.schema.training_ops_generated import Rounding

F32 = np.float32

# exp_ref constants, exactly the float32 literals of the contract.
_LOG2E = F32(1.44269504)
_LN2_HI = F32(0.693145752)
_LN2_LO = F32(1.42860677e-06)
_EXP_POLY = tuple(F32(c) for c in (1.38888889e-03, 8.33333333e-03, 4.16666667e-02,
                                   1.66666667e-01, 0.5, 1.0, 1.0))
_EXP_UNDERFLOW = F32(-87.0)
_TWO_POW_M24 = F32(5.96046448e-08)


def activation_passes(y, act_min: int, act_max: int) -> np.ndarray:
    """Where a fused activation clamp passes the gradient: act_min < y < act_max (bool, elementwise)."""
    y = np.asarray(y).astype(np.int32)
    return (y > act_min) & (y < act_max)


def packed_mask_bytes(count: int) -> int:
    """Bytes of the packed activation mask of `count` elements (8 a byte)."""
    return (count + 7) // 8


def activation_mask(dy: np.ndarray, y, act_min: int, act_max: int) -> np.ndarray:
    """Straight-through estimator of the fused activation clamp: `md`.

    `y` is None when the layer has no fused activation (the gradient passes unchanged);
    otherwise the layer's int8 forward output (same element count as `dy`), or its packed
    uint8 mask `[ceil(N/8)]` (TFLT_ACTIVATION_MASK with this act_min/act_max; element i of
    `dy` in row-major order is bit i % 8 of byte i // 8), which passes the same elements.
    """
    dy = np.asarray(dy, F32)
    if y is None:
        return dy
    return np.where(gradient_passes(y, dy.shape, act_min, act_max), dy, F32(0.0))


def gradient_passes(y, shape: tuple, act_min: int, act_max: int) -> np.ndarray:
    """bool `shape`: where the mask `y` (int8 output or packed bits, as activation_mask takes it)
    passes a gradient of that shape."""
    y = np.asarray(y)
    count = int(np.prod(shape, dtype=np.int64))
    if y.dtype != np.uint8:
        return activation_passes(y.reshape(shape), act_min, act_max)
    if y.size != packed_mask_bytes(count):
        raise UserError(f"a packed activation mask of {count} elements has {packed_mask_bytes(count)} bytes, "
                        f"got {y.size}")
    return np.unpackbits(y.reshape(-1), count=count, bitorder="little").reshape(shape) != 0


def exp_ref(x) -> np.ndarray:
    """The contract's deterministic float32 exp (no libm), elementwise."""
    x = np.asarray(x, F32)
    n = np.floor(x * _LOG2E + F32(0.5))
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _EXP_POLY[0]
    for c in _EXP_POLY[1:]:
        p = p * r + c
    # ldexp gives the same 0 or inf for any exponent beyond ±1000: clipping only keeps the
    # int cast defined for huge or NaN n.
    exponent = np.clip(np.nan_to_num(n), -1000, 1000).astype(np.int32)
    result = np.ldexp(np.asarray(p, F32), exponent)
    return np.where(x < _EXP_UNDERFLOW, F32(0.0), result).astype(F32)


# ---------------------------------------------------------------- update rounding

def as_uint32(v) -> np.ndarray:
    """Integers (signed or not) as the uint32 the hash consumes, e.g. `(uint32)state[1]`."""
    return (np.asarray(v, np.int64) & 0xFFFFFFFF).astype(np.uint32)


def hash32(x) -> np.ndarray:
    """The contract's 32-bit integer mixer (uint32 wrap-around), elementwise."""
    x = np.array(as_uint32(x), ndmin=1)  # a fresh array: the ufuncs below wrap without warnings
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def stochastic_u(param_id: int, step: int, index) -> np.ndarray:
    """Uniform [0, 1) float32 draw for flat parameter element `index` at training `step`."""
    index = np.asarray(index)
    seed = hash32(hash32(param_id) ^ as_uint32(step))
    h = hash32(seed ^ as_uint32(index).reshape(-1))
    return ((h >> np.uint32(8)).astype(F32) * _TWO_POW_M24).reshape(index.shape)


def rounded_step(g, qas, lr, *, rounding: int, param_id: int, step: int, index, unit: float = 1.0) -> np.ndarray:
    """r = round((g * qas) * lr * unit) in float32, before clamping; NaN means "no change".

    `g`, `qas` (per element) and `index` (flat element index in the parameter) share a shape;
    `unit` (a power of two, so the product is exact) counts the step in 1/unit LSB.
    """
    s = ((np.asarray(g, F32) * np.asarray(qas, F32)) * F32(lr)) * F32(unit)
    if rounding == Rounding.NEAREST:
        return np.floor(s + F32(0.5))
    if rounding == Rounding.STOCHASTIC:
        return np.floor(s + stochastic_u(param_id, step, index))
    raise ValueError(f"unknown rounding mode {rounding}")


# ---------------------------------------------------------------- geometry

def resolve_padding(padding: str, in_size: int, kernel: int, stride: int, dilation: int) -> tuple:
    """(out_size, pad_before) of SAME/VALID padding, as TFLM computes them."""
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size + stride - effective) // stride
    else:
        raise ValueError(f"unknown padding {padding}")
    total = max((out - 1) * stride + effective - in_size, 0)
    return out, total // 2


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _outputs_of_tap(k, out_size, in_size, stride, dilation, pad):
    """(output slice, input slice) of the output positions whose kernel tap `k` lies
    inside the input (input position = o*stride - pad + k*dilation), or None."""
    base = k * dilation - pad
    o0 = max(0, _ceil_div(-base, stride))
    o1 = min(out_size, (in_size - 1 - base) // stride + 1)
    if o1 <= o0:
        return None
    return slice(o0, o1), slice(o0 * stride + base, (o1 - 1) * stride + base + 1, stride)


def _taps_of_output(o, kernel, in_size, stride, dilation, pad):
    """(tap slice, input slice) of the kernel taps of output position `o` that lie
    inside the input, or None. Out-of-bounds taps contribute nothing (no zero point)."""
    base = o * stride - pad
    k0 = max(0, _ceil_div(-base, dilation))
    k1 = min(kernel, (in_size - 1 - base) // dilation + 1)
    if k1 <= k0:
        return None
    return slice(k0, k1), slice(base + k0 * dilation, base + (k1 - 1) * dilation + 1, dilation)


@dataclasses.dataclass(frozen=True)
class Window:
    """A convolution's sliding window; SAME/VALID already resolved into explicit pads."""
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    pad_top: int = 0
    pad_left: int = 0

    def tap_views(self, kernel_hw: tuple, out_hw: tuple, in_hw: tuple):
        """For each kernel tap (kh, kw) ascending: (kh, kw, out_rows, out_cols, in_rows,
        in_cols), the slices of the output positions that read that tap inside the input
        and of the input positions they read. Taps no output reads inside are skipped."""
        for kh in range(kernel_hw[0]):
            rows = _outputs_of_tap(kh, out_hw[0], in_hw[0], self.stride_h, self.dilation_h, self.pad_top)
            if rows is None:
                continue
            for kw in range(kernel_hw[1]):
                cols = _outputs_of_tap(kw, out_hw[1], in_hw[1], self.stride_w, self.dilation_w, self.pad_left)
                if cols is not None:
                    yield kh, kw, rows[0], cols[0], rows[1], cols[1]

    def receptive_fields(self, kernel_hw: tuple, out_hw: tuple, in_hw: tuple):
        """For each output position p = (oh, ow) in row-major order: (oh, ow, tap_rows,
        tap_cols, in_rows, in_cols), the slices of its in-bounds taps and the input they read."""
        for oh in range(out_hw[0]):
            rows = _taps_of_output(oh, kernel_hw[0], in_hw[0], self.stride_h, self.dilation_h, self.pad_top)
            if rows is None:
                continue
            for ow in range(out_hw[1]):
                cols = _taps_of_output(ow, kernel_hw[1], in_hw[1], self.stride_w, self.dilation_w, self.pad_left)
                if cols is not None:
                    yield oh, ow, rows[0], cols[0], rows[1], cols[1]


def as_image(a: np.ndarray) -> np.ndarray:
    """An activation as `[H, W, C]` (batch 1); rank-2 `[1, C]` is a 1×1 image."""
    a = np.asarray(a)
    if a.ndim == 4:
        return a[0]
    return a.reshape(1, 1, -1)


def filter_shape(shape) -> tuple:
    """A weight shape as `[O, kh, kw, I]`; a rank-2 FULLY_CONNECTED `[O, I]` is 1×1."""
    shape = tuple(int(d) for d in shape)
    return shape if len(shape) == 4 else (shape[0], 1, 1, shape[1])


def as_filter(w: np.ndarray) -> np.ndarray:
    """A weight array as `[O, kh, kw, I]` (see filter_shape)."""
    w = np.asarray(w)
    return w.reshape(filter_shape(w.shape))


def effective_weight(w: np.ndarray, w_train) -> np.ndarray:
    """Split weights: input channels `[0, K)` from `w_train`, the rest from `w`, as int32 `[O,kh,kw,I]`."""
    full = as_filter(w).astype(np.int32)
    if w_train is not None:
        train = as_filter(w_train)
        full[..., :train.shape[-1]] = train
    return full


# ---------------------------------------------------------------- int8 forward

def requantize_channels(acc, bias, multiplier, shift, y_zero_point: int, act_min: int, act_max: int) -> np.ndarray:
    """The int8 output of per-channel int64 accumulators `[..., O]` (TFLM's int8 conv output
    stage): plus bias (optional), wrapped to int32, requantised per channel, clamped."""
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64).reshape(-1)   # wraps like int32 in the rescale
    return requantize_int8(acc, np.asarray(multiplier, np.int64).reshape(-1), np.asarray(shift, np.int64).reshape(-1),
                           y_zero_point, act_min, act_max)


# ---------------------------------------------------------------- reference-executor plumbing

WINDOW_FIELDS = ("stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left")


def decode_options(options_class, op) -> dict:
    """The op's custom options as {field name: value} (schema defaults for empty bytes)."""
    try:
        options = options_class.from_bytes(op.custom_options or b"")
    except ValueError as exc:
        raise UserError(f"{op.kind}: bad custom options: {exc}") from None
    return table_fields(options)


def table_fields(table) -> dict:
    """A schema table (dataclass) as {field name: value}."""
    return {field.name: getattr(table, field.name) for field in table.FIELDS}


def pick(options: dict, *names) -> dict:
    return {name: options[name] for name in names}


def op_inputs(op, args, count: int) -> list:
    """The op's input values padded to `count` (trailing optional inputs may be omitted)."""
    if len(args) > count:
        raise UserError(f"{op.kind} takes at most {count} inputs, got {len(args)}")
    return list(args) + [None] * (count - len(args))


def training_label(label) -> int:
    """label[0]; negative means inference mode (backward/update ops do nothing)."""
    return int(np.asarray(label).reshape(-1)[0])


def unspecified_outputs(op) -> list:
    """Outputs of a backward op in inference mode: contents unspecified, zeros here."""
    return [np.zeros(t.shape, t.dtype) for t in op.outputs]
