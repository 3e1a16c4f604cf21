// Gradients of CONV_2D / FULLY_CONNECTED (and the parameter gradients of
// DEPTHWISE_CONV_2D) in the contract's float evaluation order
// (docs/training_ops.md). dy is [1, Ho, Wo, O]; x is [1, H, W, C].
#ifndef TFLM_TRAIN_MICRO_CORE_CONV_GRAD_H_
#define TFLM_TRAIN_MICRO_CORE_CONV_GRAD_H_

#include <cstdint>

#include "core/conv_geometry.h"
#include "core/split_weight.h"

namespace tflm_train {
namespace core {

// dx[ih, iw, i] = sum over (kh, kw) ascending, o ascending of
// (float)W[o, kh, kw, i] * (md[oh, ow, o] * w_scale[o]). dx is [1, H, W, I].
void ConvInputGrad(const ConvGeometry& geometry, const ActivationMask& mask,
                   const float* dy, const SplitWeight& weight,
                   const float* w_scale, float* dx);

// One element dx[ih, iw, i] of ConvInputGrad (it reads input channel i's
// weights only), for an op that needs one input channel at a time.
float ConvInputGradAt(const ConvGeometry& geometry, const ActivationMask& mask,
                      const float* dy, const SplitWeight& weight,
                      const float* w_scale, int ih, int iw, int i);

// One output channel `channel` of a masked gradient dy [P, channels] (P
// positions, row-major): md at position p. An op that streams output channels
// keeps just one channel's md (channels 1, no mask), or one group's (channels
// M, no mask; `offset` picks the group's channels).
struct ChannelGradient {
  const float* dy = nullptr;
  ActivationMask mask;
  int channels = 1;
  int channel = 0;

  float At(int p, int offset = 0) const {
    const int index = p * channels + channel + offset;
    return mask.Apply(dy[index], index);
  }
};

// For a 1x1 filter (every dx element has at most one tap), adds output
// channel o's terms (float)W[o, 0, 0, i] * (md[p] * w_scale) to dx: calling it
// for o ascending on a zeroed dx sums in ConvInputGrad's order, bit for bit.
void AddPointwiseInputGrad(const ConvGeometry& geometry,
                           const ChannelGradient& md, const SplitWeight& weight,
                           float w_scale, int o, float* dx);

// gb = sum_p md[p], p in row-major (oh, ow) order.
float BiasGrad(int positions, const ChannelGradient& md);

// The weight gradient of one output channel, for the fused update (which
// consumes each element at once) and TFLT_CONV_WEIGHT_GRAD alike.
struct WeightGradSpec {
  ConvGeometry geometry;
  int out_channels = 0;  // O, channels of dy
  int x_channels = 0;    // channels of x
  // Last dim of the trainable weight: K input channels (conv/FC, weight
  // [O, kh, kw, K]) or the C*M output channels (depthwise, [1, kh, kw, C*M]).
  int train_channels = 0;
  bool depthwise = false;
  int depth_multiplier = 1;
  int32_t x_zero_point = 0;
  float x_scale = 0.0f;
};

// acc = sum_p md[p] * (float)(x[ih, iw, x_channel] - x_zp) over in-bounds
// positions in row-major order; returns acc * x_scale.
float WeightGradAt(const WeightGradSpec& spec, const ChannelGradient& md,
                   const int8_t* x, int kh, int kw, int x_channel);

// Calls visit(flat_index, g) for every trainable weight element of output
// channel `o` (whose gradient `md` is); flat_index is row-major within the
// trainable weight.
template <typename Visit>
void ForEachWeightGrad(const WeightGradSpec& spec, const ChannelGradient& md,
                       const int8_t* x, int o, Visit&& visit) {
  const ConvGeometry& g = spec.geometry;
  for (int kh = 0; kh < g.kernel_h; ++kh) {
    for (int kw = 0; kw < g.kernel_w; ++kw) {
      const int tap = kh * g.kernel_w + kw;
      if (spec.depthwise) {
        visit(tap * spec.train_channels + o,
              WeightGradAt(spec, md, x, kh, kw, o / spec.depth_multiplier));
        continue;
      }
      const int row = (o * g.kernel_h * g.kernel_w + tap) * spec.train_channels;
      for (int i = 0; i < spec.train_channels; ++i) {
        visit(row + i, WeightGradAt(spec, md, x, kh, kw, i));
      }
    }
  }
}

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_CONV_GRAD_H_
