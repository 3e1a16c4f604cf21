#include "core/conv_grad.h"

namespace tflm_train {
namespace core {

namespace {

// ConvInputGradAt's body, inlined into ConvInputGrad's loops.
inline float InputGradAt(const ConvGeometry& geometry,
                         const ActivationMask& mask, const float* dy,
                         const SplitWeight& weight, const float* w_scale,
                         int ih, int iw, int i) {
  const int out_channels = weight.out_channels;
  float acc = 0.0f;
  geometry.ForEachTapOn(ih, iw, [&](int kh, int kw, int position) {
    const int base = position * out_channels;
    for (int o = 0; o < out_channels; ++o) {
      const float grad = mask.Apply(dy[base + o], base + o) * w_scale[o];
      acc = acc + static_cast<float>(weight.At(o, kh, kw, i)) * grad;
    }
  });
  return acc;
}

}  // namespace

void ConvInputGrad(const ConvGeometry& geometry, const ActivationMask& mask,
                   const float* dy, const SplitWeight& weight,
                   const float* w_scale, float* dx) {
  for (int ih = 0; ih < geometry.in_h; ++ih) {
    for (int iw = 0; iw < geometry.in_w; ++iw) {
      for (int i = 0; i < weight.in_channels; ++i) {
        dx[(ih * geometry.in_w + iw) * weight.in_channels + i] =
            InputGradAt(geometry, mask, dy, weight, w_scale, ih, iw, i);
      }
    }
  }
}

float ConvInputGradAt(const ConvGeometry& geometry, const ActivationMask& mask,
                      const float* dy, const SplitWeight& weight,
                      const float* w_scale, int ih, int iw, int i) {
  return InputGradAt(geometry, mask, dy, weight, w_scale, ih, iw, i);
}

void AddPointwiseInputGrad(const ConvGeometry& geometry,
                           const ChannelGradient& md, const SplitWeight& weight,
                           float w_scale, int o, float* dx) {
  const ConvGeometry& g = geometry;
  for (int oh = 0; oh < g.out_h; ++oh) {
    const int ih = g.InputRow(oh, 0);
    if (ih < 0 || ih >= g.in_h) continue;
    for (int ow = 0; ow < g.out_w; ++ow) {
      const int iw = g.InputCol(ow, 0);
      if (iw < 0 || iw >= g.in_w) continue;
      const float grad = md.At(oh * g.out_w + ow) * w_scale;
      float* acc = dx + (ih * g.in_w + iw) * weight.in_channels;
      for (int i = 0; i < weight.in_channels; ++i) {
        acc[i] = acc[i] + static_cast<float>(weight.At(o, 0, 0, i)) * grad;
      }
    }
  }
}

float BiasGrad(int positions, const ChannelGradient& md) {
  float acc = 0.0f;
  for (int p = 0; p < positions; ++p) acc = acc + md.At(p);
  return acc;
}

float WeightGradAt(const WeightGradSpec& spec, const ChannelGradient& md,
                   const int8_t* x, int kh, int kw, int x_channel) {
  const ConvGeometry& g = spec.geometry;
  float acc = 0.0f;
  for (int oh = 0; oh < g.out_h; ++oh) {
    const int ih = g.InputRow(oh, kh);
    if (ih < 0 || ih >= g.in_h) continue;
    for (int ow = 0; ow < g.out_w; ++ow) {
      const int iw = g.InputCol(ow, kw);
      if (iw < 0 || iw >= g.in_w) continue;
      const int32_t xq = x[(ih * g.in_w + iw) * spec.x_channels + x_channel];
      acc = acc + md.At(oh * g.out_w + ow) *
                      static_cast<float>(xq - spec.x_zero_point);
    }
  }
  return acc * spec.x_scale;
}

}  // namespace core
}  // namespace tflm_train
