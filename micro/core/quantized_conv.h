// The int8 per-channel output stage of TFLM's reference conv kernels
// (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), bit-exact with TFLM's
// default double-rounding requantisation.
#ifndef TFLM_TRAIN_MICRO_CORE_QUANTIZED_CONV_H_
#define TFLM_TRAIN_MICRO_CORE_QUANTIZED_CONV_H_

#include <cstdint>

#include "core/conv_geometry.h"

namespace tflm_train {
namespace core {

// round(x * multiplier * 2^(shift - 31)): a saturating rounding doubling
// high multiply after the left part of the shift, then a rounding (half away
// from zero) right shift. Requires multiplier >= 0 and shift in [-31, 30].
int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift);

// int32 addition that wraps (TFLM's accumulators do in practice) instead of
// being undefined on overflow.
inline int32_t WrappingAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) +
                              static_cast<uint32_t>(b));
}

struct QuantizedConvParams {
  ConvGeometry geometry;
  int32_t x_zero_point = 0;
  int32_t y_zero_point = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;

  // clamp(MBQM(acc + bias, multiplier, shift) + y_zero_point, act_min, act_max)
  // for an output channel's accumulator of sum (x - x_zero_point) * w.
  int8_t Output(int32_t acc, int32_t bias, int32_t multiplier,
                int32_t shift) const {
    int32_t v = MultiplyByQuantizedMultiplier(WrappingAdd(acc, bias),
                                              multiplier, shift);
    v = WrappingAdd(v, y_zero_point);
    v = v < act_min ? act_min : v;
    v = v > act_max ? act_max : v;
    return static_cast<int8_t>(v);
  }
};

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_QUANTIZED_CONV_H_
