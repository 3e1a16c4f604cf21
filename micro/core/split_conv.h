// Per-channel int8 CONV_2D / FULLY_CONNECTED with a split weight, bit-exact
// with TFLM's reference kernel (double-rounding requantisation, the TFLM
// default).
#ifndef TFLM_TRAIN_MICRO_CORE_SPLIT_CONV_H_
#define TFLM_TRAIN_MICRO_CORE_SPLIT_CONV_H_

#include <cstdint>

#include "core/conv_geometry.h"
#include "core/split_weight.h"

namespace tflm_train {
namespace core {

// round(x * multiplier * 2^(shift - 31)): a saturating rounding doubling
// high multiply after the left part of the shift, then a rounding (half away
// from zero) right shift. Requires multiplier >= 0 and shift in [-31, 30].
int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift);

struct SplitConvParams {
  ConvGeometry geometry;
  int32_t x_zero_point = 0;
  int32_t y_zero_point = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;
};

// y[oh, ow, o] = clamp(MBQM(bias[o] + sum (x - x_zp) * W, multiplier[o],
// shift[o]) + y_zp, act_min, act_max). x is [1, H, W, I], y [1, Ho, Wo, O];
// `bias` may be null. The int32 accumulator wraps like TFLM's.
void SplitConv(const SplitConvParams& params, const int8_t* x,
               const SplitWeight& weight, const int32_t* bias,
               const int32_t* multiplier, const int32_t* shift, int8_t* y);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_SPLIT_CONV_H_
