// Per-channel int8 CONV_2D / FULLY_CONNECTED with a split weight, bit-exact
// with TFLM's reference kernel.
#ifndef TFLM_TRAIN_MICRO_CORE_SPLIT_CONV_H_
#define TFLM_TRAIN_MICRO_CORE_SPLIT_CONV_H_

#include <cstdint>

#include "core/quantized_conv.h"
#include "core/split_weight.h"

namespace tflm_train {
namespace core {

// y[oh, ow, o] = params.Output(sum (x - x_zp) * W, bias[o], multiplier[o],
// shift[o]). x is [1, H, W, I], y [1, Ho, Wo, O]; `bias` may be null.
void SplitConv(const QuantizedConvParams& params, const int8_t* x,
               const SplitWeight& weight, const int32_t* bias,
               const int32_t* multiplier, const int32_t* shift, int8_t* y);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_SPLIT_CONV_H_
