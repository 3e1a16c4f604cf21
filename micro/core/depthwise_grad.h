// Input gradient of DEPTHWISE_CONV_2D in the contract's float evaluation order.
#ifndef TFLM_TRAIN_MICRO_CORE_DEPTHWISE_GRAD_H_
#define TFLM_TRAIN_MICRO_CORE_DEPTHWISE_GRAD_H_

#include <cstdint>

#include "core/conv_geometry.h"
#include "core/conv_grad.h"

namespace tflm_train {
namespace core {

// dy is [1, Ho, Wo, C*M], w is [1, kh, kw, C*M], dx is [1, H, W, C]:
// dx[ih, iw, i] = sum over (kh, kw) ascending, j in [0, M) of
// (float)w[0, kh, kw, i*M + j] * (md[oh, ow, i*M + j] * w_scale[i*M + j]).
void DepthwiseInputGrad(const ConvGeometry& geometry,
                        const ActivationMask& mask, const float* dy,
                        const int8_t* w, const float* w_scale, int in_channels,
                        int depth_multiplier, float* dx);

// One element dx[ih, iw, i] of DepthwiseInputGrad, for an op that needs one
// channel of dx at a time: `group.At(p, j)` is md[p, i*M + j] (the whole md,
// or just channel group i's); w and w_scale are the whole layer's.
float DepthwiseInputGradAt(const ConvGeometry& geometry,
                           const ChannelGradient& group, const int8_t* w,
                           const float* w_scale, int in_channels,
                           int depth_multiplier, int ih, int iw, int i);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_DEPTHWISE_GRAD_H_
