"""Reference kernels of the TFLite builtins, bit-exact with TFLM's reference kernels.

Integer kernels compute exactly in int64 and requantise with TFLM's helpers
(int32 overflow wraps as in TFLM's accumulators). Float kernels add terms one
float32 operation at a time in TFLM's loop order, so float results match too.
Quantization parameters (scales, zero points, multipliers) are derived from the
tensors exactly as TFLM's Prepare functions derive them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import math

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.errors import UserError
from tflm_train.reference import fixedpoint
from tflm_train.reference import quantization as q
from tflm_train.reference.registry import kernel

F32 = np.float32
_INT8_MIN, _INT8_MAX = -128, 127


# ---------------------------------------------------------------- tensor helpers

def _per_tensor_quant(op, tensor) -> tuple:
    """(scale, zero_point) of a per-tensor quantized tensor: TFLM reads element 0."""
    if tensor.quant is None:
        raise UserError(f"{op.kind}: tensor '{tensor.name}' has no quantization parameters")
    return float(tensor.quant.scale[0]), int(tensor.quant.zero_point[0])


def _channel_scales(op, tensor, channels: int) -> np.ndarray:
    """Per-output-channel weight scales; a per-tensor scale applies to every channel."""
    if tensor.quant is None:
        raise UserError(f"{op.kind}: weight '{tensor.name}' has no quantization parameters")
    scales = tensor.quant.scale
    if scales.size not in (1, channels):
        raise UserError(f"{op.kind}: weight '{tensor.name}' has {scales.size} scales for {channels} channels")
    return np.broadcast_to(scales, (channels,))


def _channel_multipliers(x_scale: float, w_scales, y_scale: float) -> tuple:
    """TFLM's per-channel (multiplier, shift) of s_x * s_w[o] / s_y, computed in double."""
    pairs = [q.quantize_multiplier(x_scale * float(w) / y_scale) for w in w_scales]
    return np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def _activation(op) -> int:
    return getattr(op.options, "fusedActivationFunction", schema.ActivationFunctionType.NONE)


def _options(op):
    if op.options is None:
        raise UserError(f"{op.kind} has no builtin options")
    return op.options


def _unsupported(op, *dtypes):
    types = ", ".join(np.dtype(d).name for d in dtypes)
    return UserError(f"{op.kind}: no reference kernel for {types} tensors")


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer a @ b through float64 BLAS: exact, as every partial sum of products of
    zero-point-shifted int8 values (|p| <= 255^2, fewer than 2^36 of them) is an
    integer below 2^53."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def _sum_in_order(terms: np.ndarray) -> np.ndarray:
    """Float32 sum over the last axis, left to right from 0.0f like TFLM's loops
    (np.sum adds pairwise, which rounds differently)."""
    total = np.zeros(terms.shape[:-1], F32)
    for j in range(terms.shape[-1]):
        total = total + terms[..., j]
    return total


# ---------------------------------------------------------------- sliding windows

@dataclasses.dataclass
class _Window:
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int


def _pad_before(op, padding: int, in_size: int, kernel_size: int, stride: int, dilation: int,
                out_size: int) -> int:
    """Leading padding of SAME/VALID, as TFLM's ComputePaddingHeightWidth."""
    if stride <= 0 or dilation <= 0 or kernel_size <= 0:
        raise UserError(f"{op.kind}: strides, dilations and window sizes must be positive")
    effective = (kernel_size - 1) * dilation + 1
    if padding == schema.Padding.SAME:
        expected = (in_size + stride - 1) // stride
    elif padding == schema.Padding.VALID:
        expected = (in_size + stride - effective) // stride
    else:
        raise UserError(f"{op.kind}: unknown padding type {padding}")
    if expected != out_size:
        raise UserError(f"{op.kind}: output size {out_size} does not match the padding's {expected}")
    return max((out_size - 1) * stride + effective - in_size, 0) // 2


def _window(op, x: np.ndarray, kernel_hw: tuple, dilations: tuple) -> _Window:
    opts = _options(op)
    y = op.outputs[0]
    if x.ndim != 4 or len(y.shape) != 4:
        raise UserError(f"{op.kind}: input and output must be 4-D NHWC (got {x.shape} and {y.shape})")
    kh, kw = (int(k) for k in kernel_hw)
    dh, dw = (int(d) for d in dilations)
    return _Window(kh, kw, opts.strideH, opts.strideW, dh, dw,
                   _pad_before(op, opts.padding, x.shape[1], kh, opts.strideH, dh, y.shape[1]),
                   _pad_before(op, opts.padding, x.shape[2], kw, opts.strideW, dw, y.shape[2]),
                   y.shape[1], y.shape[2])


def _taps(x: np.ndarray, win: _Window):
    """For each kernel tap (kh, kw) in row-major order: the input value each output
    position sees through it ([N, Ho, Wo, C], zero outside the input) and whether it
    is inside the input ([Ho, Wo] bool)."""
    n, h, w, c = x.shape
    span_h = (win.out_h - 1) * win.stride_h + (win.kernel_h - 1) * win.dilation_h + 1
    span_w = (win.out_w - 1) * win.stride_w + (win.kernel_w - 1) * win.dilation_w + 1
    padded = np.zeros((n, max(span_h, win.pad_top + h), max(span_w, win.pad_left + w), c), x.dtype)
    padded[:, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w] = x
    out_y = np.arange(win.out_h) * win.stride_h - win.pad_top
    out_x = np.arange(win.out_w) * win.stride_w - win.pad_left
    for ky in range(win.kernel_h):
        row0 = ky * win.dilation_h
        rows_inside = (out_y + row0 >= 0) & (out_y + row0 < h)
        rows = slice(row0, row0 + (win.out_h - 1) * win.stride_h + 1, win.stride_h)
        for kx in range(win.kernel_w):
            col0 = kx * win.dilation_w
            cols_inside = (out_x + col0 >= 0) & (out_x + col0 < w)
            cols = slice(col0, col0 + (win.out_w - 1) * win.stride_w + 1, win.stride_w)
            yield padded[:, rows, cols], rows_inside[:, None] & cols_inside[None, :]


def _accumulate_where(total: np.ndarray, term: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """total + term at positions inside the input; positions outside skip the term."""
    inside = inside[None, :, :, None]
    return np.where(inside, total + term, total)


# ---------------------------------------------------------------- convolutions

def _conv_operands(op, args):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    if w.ndim != 4:
        raise UserError(f"{op.kind}: weight must be 4-D (got {w.shape})")
    opts = _options(op)
    return x, w, bias, _window(op, x, w.shape[1:3], (opts.dilationHFactor, opts.dilationWFactor))


@kernel("CONV_2D")
def conv_2d(op, args):
    x, w, bias, win = _conv_operands(op, args)
    out_channels, _, _, group_channels = w.shape
    if x.shape[3] % group_channels or out_channels % (x.shape[3] // group_channels):
        raise UserError(f"{op.kind}: input depth {x.shape[3]} does not fit weight {w.shape}")
    if x.dtype == np.int8 and w.dtype == np.int8:
        return [_conv_int8(op, x, w, bias, win)]
    if x.dtype == np.float32 and w.dtype == np.float32:
        return [_conv_float(op, x, w, bias, win)]
    raise _unsupported(op, x.dtype, w.dtype)


def _conv_int8(op, x, w, bias, win) -> np.ndarray:
    x_scale, x_zp = _per_tensor_quant(op, op.inputs[0])
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    out_channels, kh, kw, group_channels = w.shape
    multiplier, shift = _channel_multipliers(x_scale, _channel_scales(op, op.inputs[1], out_channels), y_scale)
    # Padding with 0 after removing the zero point == TFLM skipping outside taps.
    taps = np.stack([patch for patch, _ in _taps(x.astype(np.int64) - x_zp, win)], axis=-2)
    positions = taps.shape[:3]
    groups = x.shape[3] // group_channels
    per_group = out_channels // groups
    acc = np.empty(positions + (out_channels,), np.int64)
    for g in range(groups):
        columns = taps[..., g * group_channels:(g + 1) * group_channels].reshape(-1, kh * kw * group_channels)
        weights = w[g * per_group:(g + 1) * per_group].reshape(per_group, -1)
        acc[..., g * per_group:(g + 1) * per_group] = _exact_matmul(columns, weights.T).reshape(positions + (per_group,))
    if bias is not None:
        acc += bias.astype(np.int64)
    lo, hi = q.activation_range(_activation(op), y_scale, y_zp)
    return q.requantize_int8(acc, multiplier, shift, y_zp, lo, hi)


def _conv_float(op, x, w, bias, win) -> np.ndarray:
    out_channels, _, kw, group_channels = w.shape
    per_group = out_channels // (x.shape[3] // group_channels)
    first_input_channel = (np.arange(out_channels) // per_group) * group_channels
    total = np.zeros(x.shape[:1] + (win.out_h, win.out_w, out_channels), F32)
    for tap, (patch, inside) in enumerate(_taps(x, win)):
        ky, kx = divmod(tap, kw)
        for c in range(group_channels):
            total = _accumulate_where(total, patch[..., first_input_channel + c] * w[:, ky, kx, c], inside)
    return q.clamp_float(total + (bias if bias is not None else F32(0.0)), _activation(op))


@kernel("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(op, args):
    x, w, bias, win = _conv_operands(op, args)
    channels, out_channels = x.shape[3], w.shape[3]
    if w.shape[0] != 1 or out_channels % channels:
        raise UserError(f"{op.kind}: weight {w.shape} does not fit input depth {channels}")
    multiplier = out_channels // channels
    if x.dtype == np.int8 and w.dtype == np.int8:
        return [_depthwise_int8(op, x, w, bias, win, multiplier)]
    if x.dtype == np.float32 and w.dtype == np.float32:
        return [_depthwise_float(op, x, w, bias, win, multiplier)]
    raise _unsupported(op, x.dtype, w.dtype)


def _depthwise_int8(op, x, w, bias, win, depth_multiplier: int) -> np.ndarray:
    x_scale, x_zp = _per_tensor_quant(op, op.inputs[0])
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    out_channels = w.shape[3]
    multiplier, shift = _channel_multipliers(x_scale, _channel_scales(op, op.inputs[1], out_channels), y_scale)
    acc = np.zeros(x.shape[:1] + (win.out_h, win.out_w, out_channels), np.int64)
    for tap, (patch, _) in enumerate(_taps(x.astype(np.int64) - x_zp, win)):
        ky, kx = divmod(tap, win.kernel_w)
        acc += np.repeat(patch, depth_multiplier, axis=-1) * w[0, ky, kx].astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64)
    lo, hi = q.activation_range(_activation(op), y_scale, y_zp)
    return q.requantize_int8(acc, multiplier, shift, y_zp, lo, hi)


def _depthwise_float(op, x, w, bias, win, depth_multiplier: int) -> np.ndarray:
    total = np.zeros(x.shape[:1] + (win.out_h, win.out_w, w.shape[3]), F32)
    for tap, (patch, inside) in enumerate(_taps(x, win)):
        ky, kx = divmod(tap, win.kernel_w)
        total = _accumulate_where(total, np.repeat(patch, depth_multiplier, axis=-1) * w[0, ky, kx], inside)
    return q.clamp_float(total + (bias if bias is not None else F32(0.0)), _activation(op))


@kernel("FULLY_CONNECTED")
def fully_connected(op, args):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    y = op.outputs[0]
    if w.ndim != 2:
        raise UserError(f"{op.kind}: weight must be 2-D (got {w.shape})")
    out_channels, depth = w.shape
    if x.size % depth or y.size != (x.size // depth) * out_channels:
        raise UserError(f"{op.kind}: input {x.shape}, weight {w.shape} and output {y.shape} do not fit")
    rows = x.reshape(-1, depth)
    if x.dtype == np.int8 and w.dtype == np.int8:
        out = _fully_connected_int8(op, rows, w, bias)
    elif x.dtype == np.float32 and w.dtype == np.float32:
        total = np.zeros((rows.shape[0], out_channels), F32)
        for d in range(depth):
            total = total + rows[:, d:d + 1] * w[:, d]
        out = q.clamp_float(total + (bias if bias is not None else F32(0.0)), _activation(op))
    else:
        raise _unsupported(op, x.dtype, w.dtype)
    return [out.reshape(y.shape)]


def _fully_connected_int8(op, rows, w, bias) -> np.ndarray:
    x_scale, x_zp = _per_tensor_quant(op, op.inputs[0])
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    w_tensor = op.inputs[1]
    centered = rows.astype(np.int64) - x_zp
    if w_tensor.quant is not None and w_tensor.quant.per_channel:
        # The per-channel kernel ignores the weights' zero points.
        multiplier, shift = _channel_multipliers(x_scale, _channel_scales(op, w_tensor, w.shape[0]), y_scale)
        acc = _exact_matmul(centered, w.T)
    else:
        w_scale, w_zp = _per_tensor_quant(op, w_tensor)
        # TFLM multiplies the two float scales in float before widening to double.
        multiplier, shift = q.quantize_multiplier(float(F32(x_scale) * F32(w_scale)) / y_scale)
        acc = _exact_matmul(centered, (w.astype(np.int64) - w_zp).T)
    if bias is not None:
        acc += bias.astype(np.int64)
    lo, hi = q.activation_range(_activation(op), y_scale, y_zp)
    return q.requantize_int8(acc, multiplier, shift, y_zp, lo, hi)


# ---------------------------------------------------------------- elementwise

_ADD_LEFT_SHIFT = 20   # TFLM's int8 ADD headroom


@kernel("ADD")
def add(op, args):
    a, b = args[0], args[1]
    y = op.outputs[0]
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise UserError(f"{op.kind}: shapes {a.shape} and {b.shape} do not broadcast") from None
    if int(np.prod(shape)) != y.size:
        raise UserError(f"{op.kind}: inputs {a.shape} and {b.shape} do not fit output {y.shape}")
    if a.dtype == np.int8 and b.dtype == np.int8:
        out = _add_int8(op, a, b)
    elif a.dtype == np.float32 and b.dtype == np.float32:
        out = q.clamp_float(a + b, _activation(op))
    else:
        raise _unsupported(op, a.dtype, b.dtype)
    return [out.reshape(y.shape)]


def _add_multiplier(op, real: float) -> tuple:
    # TFLM's QuantizeMultiplierSmallerThanOneExp aborts outside (0, 1).
    if not 0.0 < real < 1.0:
        raise UserError(f"{op.kind}: scales give rescale factor {real}; TFLM needs it in (0, 1)")
    return q.quantize_multiplier(real)


def _add_int8(op, a, b) -> np.ndarray:
    a_scale, a_zp = _per_tensor_quant(op, op.inputs[0])
    b_scale, b_zp = _per_tensor_quant(op, op.inputs[1])
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    twice_max_input_scale = 2 * max(a_scale, b_scale)
    a_mult, a_shift = _add_multiplier(op, a_scale / twice_max_input_scale)
    b_mult, b_shift = _add_multiplier(op, b_scale / twice_max_input_scale)
    y_mult, y_shift = _add_multiplier(op, twice_max_input_scale / ((1 << _ADD_LEFT_SHIFT) * y_scale))
    scaled_a = q.multiply_by_quantized_multiplier((a.astype(np.int64) - a_zp) << _ADD_LEFT_SHIFT, a_mult, a_shift)
    scaled_b = q.multiply_by_quantized_multiplier((b.astype(np.int64) - b_zp) << _ADD_LEFT_SHIFT, b_mult, b_shift)
    lo, hi = q.activation_range(_activation(op), y_scale, y_zp)
    return q.requantize_int8(scaled_a + scaled_b, y_mult, y_shift, y_zp, lo, hi)


@kernel("QUANTIZE")
def quantize(op, args):
    x = args[0]
    y = op.outputs[0]
    y_scale, y_zp = _per_tensor_quant(op, y)
    if y.dtype != np.int8:
        raise _unsupported(op, x.dtype, y.dtype)
    if x.dtype == np.float32:
        rounded = q.round_half_away(x / F32(y_scale))
        # Like x86's float→int32 conversion: NaN and out-of-range values become INT32_MIN.
        in_range = (rounded >= -2.0 ** 31) & (rounded < 2.0 ** 31)
        as_int = np.where(in_range, np.where(in_range, rounded, 0).astype(np.int64), q.INT32_MIN)
        return [np.clip(q.wrap_int32(as_int + y_zp), _INT8_MIN, _INT8_MAX).astype(np.int8)]
    if x.dtype == np.int8:
        x_scale, x_zp = _per_tensor_quant(op, op.inputs[0])
        multiplier, shift = q.quantize_multiplier(x_scale / y_scale)
        return [q.requantize_int8(x.astype(np.int64) - x_zp, multiplier, shift, y_zp, _INT8_MIN, _INT8_MAX)]
    raise _unsupported(op, x.dtype)


@kernel("DEQUANTIZE")
def dequantize(op, args):
    x = args[0]
    if x.dtype != np.int8 or op.outputs[0].dtype != np.float32:
        raise _unsupported(op, x.dtype, op.outputs[0].dtype)
    scale, zp = _per_tensor_quant(op, op.inputs[0])
    # TFLM multiplies in double and rounds once to float.
    return [(np.float64(scale) * (x.astype(np.int64) - zp)).astype(F32)]


# ---------------------------------------------------------------- reductions and pooling

def _reduction_axes(op, axis: np.ndarray, rank: int) -> list:
    axes = []
    for a in np.asarray(axis).reshape(-1).tolist():
        resolved = a + rank if a < 0 else a
        if not 0 <= resolved < rank:
            raise UserError(f"{op.kind}: axis {a} is out of range for a rank-{rank} input")
        if resolved not in axes:
            axes.append(resolved)
    return sorted(axes)


@kernel("MEAN")
def mean(op, args):
    x, axis = args[0], args[1]
    y = op.outputs[0]
    axes = _reduction_axes(op, axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    kept = [d for i, d in enumerate(x.shape) if i not in axes]
    if int(np.prod(kept, dtype=np.int64)) != y.size:
        raise UserError(f"{op.kind}: reducing {x.shape} over axes {axes} does not give output {y.shape}")
    if count == 0:
        return [np.zeros(y.shape, y.dtype)]
    # Reduced elements of one output, in TFLM's row-major visiting order.
    terms = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim)).reshape(-1, count)
    if x.dtype == np.int8:
        out = _mean_int8(op, terms, count)
    elif x.dtype == np.float32:
        out = _sum_in_order(terms) / F32(count)
    else:
        raise _unsupported(op, x.dtype)
    return [out.reshape(y.shape)]


def _mean_int8(op, terms: np.ndarray, count: int) -> np.ndarray:
    x_scale, x_zp = _per_tensor_quant(op, op.inputs[0])
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    multiplier, shift = q.quantize_multiplier(x_scale / y_scale)
    # TFLM folds 1/count into the multiplier instead of dividing the sum.
    count_shift = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << count_shift) // count
    shift -= count_shift
    total = q.wrap_int32(terms.astype(np.int64).sum(axis=-1))
    centered = q.wrap_int32(total - x_zp * count)
    return q.requantize_int8(centered, multiplier, shift, y_zp, _INT8_MIN, _INT8_MAX)


@kernel("AVERAGE_POOL_2D")
def average_pool_2d(op, args):
    x = args[0]
    opts = _options(op)
    win = _window(op, x, (opts.filterHeight, opts.filterWidth), (1, 1))
    if x.dtype == np.int8:
        return [_average_pool_int8(op, x, win)]
    if x.dtype == np.float32:
        total = np.zeros(x.shape[:1] + (win.out_h, win.out_w, x.shape[3]), F32)
        count = np.zeros((win.out_h, win.out_w), F32)
        for patch, inside in _taps(x, win):
            total = _accumulate_where(total, patch, inside)
            count += inside
        _check_pool_counts(op, count)
        return [q.clamp_float(total / count[None, :, :, None], _activation(op))]
    raise _unsupported(op, x.dtype)


def _check_pool_counts(op, count: np.ndarray):
    if not count.all():
        raise UserError(f"{op.kind}: a pooling window lies entirely outside the input")


def _average_pool_int8(op, x, win) -> np.ndarray:
    # TFLM averages the raw values: input and output share scale and zero point.
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    total = np.zeros(x.shape[:1] + (win.out_h, win.out_w, x.shape[3]), np.int64)
    count = np.zeros((win.out_h, win.out_w), np.int64)
    for patch, inside in _taps(x.astype(np.int64), win):
        total += patch
        count += inside
    _check_pool_counts(op, count)
    count = count[None, :, :, None]
    half = count // 2
    # Round half away from zero with C's truncating division.
    average = np.where(total > 0, (total + half) // count, -((half - total) // count))
    lo, hi = q.activation_range(_activation(op), y_scale, y_zp)
    return np.clip(average, lo, hi).astype(np.int8)


# ---------------------------------------------------------------- softmax

_SOFTMAX_DIFF_INTEGER_BITS = 5
_SOFTMAX_ACCUMULATION_INTEGER_BITS = 12


@kernel("SOFTMAX")
def softmax(op, args):
    x = args[0]
    y = op.outputs[0]
    beta = float(op.options.beta) if op.options is not None else 1.0
    if x.ndim < 1 or x.size == 0:
        raise UserError(f"{op.kind}: input must have at least one element and one dimension")
    rows = x.reshape(-1, x.shape[-1])
    if x.dtype == np.int8 and y.dtype == np.int8:
        out = _softmax_int8(op, rows, beta)
    elif x.dtype == np.float32:
        out = _softmax_float(rows, beta)
    else:
        raise _unsupported(op, x.dtype, y.dtype)
    return [out.reshape(y.shape)]


def _softmax_int8(op, rows: np.ndarray, beta: float) -> np.ndarray:
    x_scale, _ = _per_tensor_quant(op, op.inputs[0])
    y_scale, y_zp = _per_tensor_quant(op, op.outputs[0])
    if y_zp != -128 or F32(y_scale) != F32(1.0 / 256):
        raise UserError(f"{op.kind}: TFLM needs an int8 output with scale 1/256 and zero point -128 "
                        f"(got {y_scale}, {y_zp})")
    # PreprocessSoftmaxScaling: input differences as Q5.26, capped multiplier.
    real = min(beta * x_scale * float(1 << (31 - _SOFTMAX_DIFF_INTEGER_BITS)), float((1 << 31) - 1))
    multiplier, left_shift = q.quantize_multiplier(real)
    if left_shift < 0:
        raise UserError(f"{op.kind}: input scale {x_scale} is too small for TFLM's int8 softmax")
    radius = math.floor(((1 << _SOFTMAX_DIFF_INTEGER_BITS) - 1)
                        * float(1 << (31 - _SOFTMAX_DIFF_INTEGER_BITS)) / float(1 << left_shift))
    diff = rows.astype(np.int64) - rows.max(axis=-1, keepdims=True)
    used = diff >= -radius
    scaled_diff = q.saturating_rounding_doubling_high_mul(q.wrap_int32(diff << left_shift), multiplier)
    exps = fixedpoint.exp_on_negative_values(scaled_diff, _SOFTMAX_DIFF_INTEGER_BITS)
    accumulated = fixedpoint.rescale(exps, 0, _SOFTMAX_ACCUMULATION_INTEGER_BITS)
    sum_of_exps = q.wrap_int32(np.where(used, accumulated, 0).sum(axis=-1, keepdims=True))
    scale, bits_over_unit = fixedpoint.reciprocal(sum_of_exps, _SOFTMAX_ACCUMULATION_INTEGER_BITS)
    exponent = bits_over_unit + 31 - 8
    probabilities = q.rounding_divide_by_pot(q.saturating_rounding_doubling_high_mul(scale, exps), exponent)
    out = np.clip(probabilities + _INT8_MIN, _INT8_MIN, _INT8_MAX)
    return np.where(used, out, _INT8_MIN).astype(np.int8)


def _libm_expf():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    fn = libm.expf
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


# TFLM calls the C library's expf; numpy's float32 exp may differ in the last bit.
_EXPF = _libm_expf()


def _softmax_float(rows: np.ndarray, beta: float) -> np.ndarray:
    scaled = (rows - rows.max(axis=-1, keepdims=True)) * F32(beta)
    exps = np.array([_EXPF(float(v)) for v in scaled.reshape(-1)], F32).reshape(scaled.shape)
    return exps / _sum_in_order(exps)[:, None]


# ---------------------------------------------------------------- data movement

def _same_size(op, x: np.ndarray) -> list:
    y = op.outputs[0]
    if x.size != y.size:
        raise UserError(f"{op.kind}: cannot reshape {x.shape} to {y.shape}")
    return [x.reshape(y.shape)]


@kernel("RESHAPE")
def reshape(op, args):
    return _same_size(op, args[0])


@kernel("SQUEEZE")
def squeeze(op, args):
    return _same_size(op, args[0])


@kernel("PAD")
@kernel("PADV2")
def pad(op, args):
    x, paddings = args[0], args[1]
    constant = args[2] if len(args) > 2 else None
    y = op.outputs[0]
    widths = np.asarray(paddings).reshape(-1, 2).astype(np.int64)
    if widths.shape[0] != x.ndim or (widths < 0).any():
        raise UserError(f"{op.kind}: paddings {widths.tolist()} do not fit a rank-{x.ndim} input")
    if constant is not None:
        value = constant.reshape(-1)[0]
    elif x.dtype == np.int8:
        value = _per_tensor_quant(op, y)[1]   # TFLM pads with the output's zero point
    else:
        value = 0
    out = np.pad(x, widths, constant_values=value)
    if out.shape != y.shape:
        raise UserError(f"{op.kind}: padding {x.shape} gives {out.shape}, output is {y.shape}")
    return [out]


@kernel("SLICE")
def slice_(op, args):
    x, begin, size = args[0], np.asarray(args[1]).reshape(-1), np.asarray(args[2]).reshape(-1)
    y = op.outputs[0]
    if begin.size != x.ndim or size.size != x.ndim:
        raise UserError(f"{op.kind}: begin/size must have {x.ndim} elements")
    index = []
    for dim, b, s in zip(x.shape, begin.tolist(), size.tolist()):
        end = dim if s == -1 else b + s
        if not 0 <= b <= end <= dim:
            raise UserError(f"{op.kind}: slice begin {begin.tolist()} size {size.tolist()} exceeds {x.shape}")
        index.append(slice(b, end))
    out = x[tuple(index)]
    if out.shape != y.shape:
        raise UserError(f"{op.kind}: slice gives {out.shape}, output is {y.shape}")
    return [out]
