// Per-channel int8 DEPTHWISE_CONV_2D with explicit padding, bit-exact with
// TFLM's reference kernel.
#ifndef TFLM_TRAIN_MICRO_CORE_DEPTHWISE_CONV_H_
#define TFLM_TRAIN_MICRO_CORE_DEPTHWISE_CONV_H_

#include <cstdint>

#include "core/quantized_conv.h"

namespace tflm_train {
namespace core {

struct DepthwiseConvParams {
  QuantizedConvParams conv;
  int in_channels = 1;       // C
  int depth_multiplier = 1;  // M: output channel o reads input channel o / M
};

// y[oh, ow, o] = params.conv.Output(sum over the taps inside the input of
// (x[ih, iw, o / M] - x_zp) * w[kh, kw, o], bias[o], multiplier[o], shift[o])
// for o < C*M. x is [1, H, W, C], w [1, kh, kw, C*M], y [1, Ho, Wo, C*M];
// `bias` may be null. The geometry must pass CheckConvGeometry.
void DepthwiseConv(const DepthwiseConvParams& params, const int8_t* x,
                   const int8_t* w, const int32_t* bias,
                   const int32_t* multiplier, const int32_t* shift, int8_t* y);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_DEPTHWISE_CONV_H_
