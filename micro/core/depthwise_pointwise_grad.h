// TFLT_DEPTHWISE_POINTWISE_GRAD: the backward through a depthwise layer into
// the conv feeding it (1x1 when its input gradient is needed), one of that
// conv's output channels c at a time: channel c of the depthwise input
// gradient, masked by the conv's activation, goes straight into the conv's
// input gradient and its update, so the whole depthwise input gradient
// [H', W', C] never exists (only H' x W' floats). In block mode the op starts
// from the gradient of the conv after the depthwise layer (the projection):
// channel group c of the depthwise output gradient is its input gradient's
// channels c*M .. c*M+M-1, which also feed the depthwise layer's update, so
// the depthwise output gradient [Ho, Wo, C*M] never exists whole either.
#ifndef TFLM_TRAIN_MICRO_CORE_DEPTHWISE_POINTWISE_GRAD_H_
#define TFLM_TRAIN_MICRO_CORE_DEPTHWISE_POINTWISE_GRAD_H_

#include <cstdint>

#include "core/conv_geometry.h"
#include "core/conv_grad.h"
#include "core/conv_update.h"
#include "core/split_weight.h"

namespace tflm_train {
namespace core {

// TFLT_DEPTHWISE_INPUT_GRAD's operands.
struct DepthwiseBackward {
  ConvGeometry geometry;  // its input: the conv layer's output H' x W'
  int channels = 0;       // C
  int depth_multiplier = 1;
  ActivationMask mask;
  const float* dy = nullptr;       // [1, Ho, Wo, C*M]; unused in block mode
  const int8_t* w = nullptr;       // [1, kh, kw, C*M]
  const float* w_scale = nullptr;  // [C*M]
};

// The conv layer's: its output's activation mask ([1, H', W', C]), its input
// gradient when dx is set (TFLT_CONV_INPUT_GRAD's operands, 1x1 filter) and
// its update when `update` is set (TFLT_CONV_GRAD_UPDATE's, with x).
struct PointwiseBackward {
  ActivationMask mask;
  ConvGeometry geometry;  // with dx: input H x W, output H' x W', 1x1
  SplitWeight weight;     // [C, 1, 1, I]; read before `update` writes it
  const float* w_scale = nullptr;  // [C]
  float* dx = nullptr;             // [1, H, W, I]
  const ChannelUpdate* update = nullptr;
  const int8_t* x = nullptr;  // [1, H, W, I]
};

// Block mode: the projection's input gradient (TFLT_CONV_INPUT_GRAD's
// operands; its input is the depthwise output Ho x Wo x C*M) and the
// depthwise layer's update when `update` is set (TFLT_CONV_GRAD_UPDATE's,
// depthwise, masked with DepthwiseBackward::mask).
struct ProjectionBackward {
  ConvGeometry geometry;
  ActivationMask mask;             // of its output
  const float* dy = nullptr;       // [1, Hp, Wp, O]
  SplitWeight weight;              // [O, kh, kw, C*M]
  const float* w_scale = nullptr;  // [O]
  const ChannelUpdate* update = nullptr;
  const int8_t* x = nullptr;  // the depthwise layer's input [1, H', W', C]
};

// g: H' * W' floats of scratch (block mode: H' * W' + Ho * Wo * M); it ends
// holding channel C-1's masked gradient (then channel group C-1's masked
// depthwise output gradient [Ho, Wo, M]). `projection` null: not block mode.
void DepthwisePointwiseGrad(const DepthwiseBackward& depthwise,
                            const PointwiseBackward& pointwise, float* g,
                            const ProjectionBackward* projection = nullptr);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_DEPTHWISE_POINTWISE_GRAD_H_
