"""The gemmlowp fixed-point math TFLM's int8 SOFTMAX uses, on raw int32 values.

A FixedPoint<int32, I> is a raw int32 r meaning r / 2^(31 - I). Functions take
and return raw values in int64 arrays; plain additions wrap like int32.
"""
from __future__ import annotations

import numpy as np

from tflm_train.reference.quantization import (INT32_MAX, INT32_MIN, rounding_divide_by_pot,
                                                saturating_rounding_doubling_high_mul as mul, wrap_int32)

# exp(-2^k) in Q0.31 for k = -2..4: the barrel shifter of exp_on_negative_values.
_EXP_OF_MINUS_POWERS_OF_TWO = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                               (2, 39332535), (3, 720401), (4, 242))
_EXP_MINUS_ONE_EIGHTH = 1895147668      # exp(-1/8) in Q0.31
_ONE_THIRD = 715827883                  # 1/3 in Q0.31
_48_OVER_17 = 1515870810                # in Q2.29
_MINUS_32_OVER_17 = -1010580540         # in Q2.29


def saturating_rounding_multiply_by_pot(x, exponent: int) -> np.ndarray:
    """x * 2^exponent: saturating for exponent > 0, rounding for exponent < 0."""
    x = np.asarray(x, np.int64)
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x << exponent)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def rescale(x, integer_bits_from: int, integer_bits_to: int) -> np.ndarray:
    """gemmlowp's Rescale: the same real value with a different number of integer bits."""
    return saturating_rounding_multiply_by_pot(x, integer_bits_from - integer_bits_to)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8."""
    x = wrap_int32(a + (1 << 28))
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(wrap_int32(mul(wrap_int32(x4_over_4 + x3), _ONE_THIRD) + x2), -1)
    return wrap_int32(_EXP_MINUS_ONE_EIGHTH + mul(_EXP_MINUS_ONE_EIGHTH, wrap_int32(x + poly)))


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) for a <= 0 given with `integer_bits` integer bits; result in Q0.31."""
    a = np.asarray(a, np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = wrap_int32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = wrap_int32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_OF_MINUS_POWERS_OF_TWO:
        if integer_bits > exponent:
            bit = np.int64(1) << (fractional_bits + exponent)
            result = np.where((remainder & bit) != 0, mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out (Newton-Raphson, 3 steps)."""
    a = np.asarray(a, np.int64)
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = wrap_int32(_48_OVER_17 + mul(half_denominator, _MINUS_32_OVER_17))
    one_q2_29 = 1 << 29
    for _ in range(3):
        one_minus_half_denominator_times_x = wrap_int32(one_q2_29 - mul(half_denominator, x))
        x = wrap_int32(x + rescale(mul(x, one_minus_half_denominator_times_x), 4, 2))
    return rescale(x, 1, 0)


def _rounding_half_sum(a, b) -> np.ndarray:
    """gemmlowp's RoundingHalfSum: (a + b) / 2 rounded half away from zero."""
    total = np.asarray(a, np.int64) + b
    nudged = total + np.where(total >= 0, 1, -1)
    return np.where(nudged >= 0, nudged // 2, -((-nudged) // 2))  # C division truncates


def count_leading_zeros32(x) -> np.ndarray:
    """Leading zero bits of non-negative values as uint32 (32 for zero)."""
    x = np.asarray(x, np.int64)
    return 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)


def reciprocal(x, integer_bits: int) -> tuple:
    """TFLM's GetReciprocal: (1/x as Q0.31 scaled into [0.5, 1), num_bits_over_unit) for x > 0."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = integer_bits - headroom_plus_one
    shifted_minus_one = wrap_int32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), num_bits_over_unit
