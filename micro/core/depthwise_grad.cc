#include "core/depthwise_grad.h"

namespace tflm_train {
namespace core {

void DepthwiseInputGrad(const ConvGeometry& geometry,
                        const ActivationMask& mask, const float* dy,
                        const int8_t* w, const float* w_scale, int in_channels,
                        int depth_multiplier, float* dx) {
  const ConvGeometry& g = geometry;
  const int out_channels = in_channels * depth_multiplier;
  for (int ih = 0; ih < g.in_h; ++ih) {
    for (int iw = 0; iw < g.in_w; ++iw) {
      for (int i = 0; i < in_channels; ++i) {
        const ChannelGradient group{dy, mask, out_channels,
                                    i * depth_multiplier};
        dx[(ih * g.in_w + iw) * in_channels + i] =
            DepthwiseInputGradAt(geometry, group, w, w_scale, in_channels,
                                 depth_multiplier, ih, iw, i);
      }
    }
  }
}

float DepthwiseInputGradAt(const ConvGeometry& geometry,
                           const ChannelGradient& group, const int8_t* w,
                           const float* w_scale, int in_channels,
                           int depth_multiplier, int ih, int iw, int i) {
  const ConvGeometry& g = geometry;
  const int out_channels = in_channels * depth_multiplier;
  float acc = 0.0f;
  g.ForEachTapOn(ih, iw, [&](int kh, int kw, int position) {
    const int tap = (kh * g.kernel_w + kw) * out_channels;
    for (int j = 0; j < depth_multiplier; ++j) {
      const int o = i * depth_multiplier + j;
      const float grad = group.At(position, j) * w_scale[o];
      acc = acc + static_cast<float>(w[tap + o]) * grad;
    }
  });
  return acc;
}

}  // namespace core
}  // namespace tflm_train
