"""TFLM's integer requantisation helpers, bit-exact and vectorised (int64 numpy).

TFLM is built without TFLITE_SINGLE_ROUNDING, so MultiplyByQuantizedMultiplier
is gemmlowp's double rounding: a saturating rounding doubling high multiply,
then a rounding right shift. All values are int32 quantities held in int64
arrays; where TFLM's int32 arithmetic would wrap, `wrap_int32` wraps.
"""
from __future__ import annotations

import math

import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.errors import UserError

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

_ACT = schema.ActivationFunctionType


def wrap_int32(x) -> np.ndarray:
    """Two's-complement int32 wrap-around of integer values (as int64)."""
    x = np.asarray(x, np.int64)
    return ((x - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN


def quantize_multiplier(real: float) -> tuple:
    """(multiplier, shift) with real ≈ multiplier * 2^(shift - 31), as TFLM's QuantizeMultiplier."""
    real = float(real)
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real):
        raise UserError(f"quantization multiplier {real} is not finite (check the tensors' scales)")
    fraction, shift = math.frexp(real)
    q = _round_half_away_scalar(fraction * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    # Multipliers below 2^-31 would shift every bit out: TFLM flushes them to zero.
    if shift < -31:
        return 0, 0
    return int(q), int(shift)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values: round(a*b / 2^31)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))  # C division truncates
    return np.where((a == b) & (a == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLM's MultiplyByQuantizedMultiplier(int32 x, multiplier, shift), elementwise.

    `x` is taken modulo 2^32 like TFLM's int32 accumulators; `multiplier` and
    `shift` broadcast against it (per-channel arrays along the last axis).
    """
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = wrap_int32(wrap_int32(x) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def requantize_int8(acc, multiplier, shift, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """TFLM's int8 output stage: the int32 accumulator rescaled by (multiplier, shift),
    offset by the output zero point and clamped to the activation range [lo, hi]."""
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(out, lo, hi).astype(np.int8)


def round_half_away(x) -> np.ndarray:
    """C's round() on a float array (ties away from zero), exact in the array's precision."""
    x = np.asarray(x)
    magnitude = np.abs(x)
    whole = np.floor(magnitude)
    rounded = whole + (magnitude - whole >= 0.5)
    return np.copysign(rounded, x).astype(x.dtype)


def _round_half_away_scalar(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def activation_range(fused_activation: int, scale: float, zero_point: int, dtype=np.int8) -> tuple:
    """(act_min, act_max) of a quantized output, as TFLM's CalculateActivationRangeQuantized."""
    info = np.iinfo(dtype)
    qmin, qmax = int(info.min), int(info.max)

    def quantize(real: float) -> int:
        q = round_half_away(np.float32(real) / np.float32(scale))
        if not (INT32_MIN <= q <= INT32_MAX):
            raise UserError(f"activation bound {real} does not fit the output scale {scale}")
        return int(zero_point) + int(q)

    if fused_activation == _ACT.RELU:
        return max(qmin, quantize(0.0)), qmax
    if fused_activation == _ACT.RELU6:
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if fused_activation == _ACT.RELU_N1_TO_1:
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    return qmin, qmax


def float_activation_range(fused_activation: int) -> tuple:
    """(min, max) float32 clamp of a fused activation, as TFLM's CalculateActivationRange."""
    if fused_activation == _ACT.RELU:
        return np.float32(0.0), np.float32(np.finfo(np.float32).max)
    if fused_activation == _ACT.RELU6:
        return np.float32(0.0), np.float32(6.0)
    if fused_activation == _ACT.RELU_N1_TO_1:
        return np.float32(-1.0), np.float32(1.0)
    return np.float32(np.finfo(np.float32).min), np.float32(np.finfo(np.float32).max)


def clamp_float(x: np.ndarray, fused_activation: int) -> np.ndarray:
    """TFLM's ActivationFunctionWithMinMax: min(max(x, lo), hi); infinities clamp to ±FLT_MAX."""
    lo, hi = float_activation_range(fused_activation)
    return np.minimum(np.maximum(x, lo), hi).astype(np.float32)
