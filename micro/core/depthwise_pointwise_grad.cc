#include "core/depthwise_pointwise_grad.h"

#include "core/depthwise_grad.h"

namespace tflm_train {
namespace core {

void DepthwisePointwiseGrad(const DepthwiseBackward& depthwise,
                            const PointwiseBackward& pointwise, float* g) {
  const ConvGeometry& image = depthwise.geometry;
  if (pointwise.dx != nullptr) {
    const ConvGeometry& x = pointwise.geometry;
    const int elements = x.in_h * x.in_w * pointwise.weight.in_channels;
    for (int e = 0; e < elements; ++e) pointwise.dx[e] = 0.0f;
  }
  const ChannelGradient md{g, ActivationMask{}, 1, 0};
  for (int c = 0; c < depthwise.channels; ++c) {
    for (int ih = 0; ih < image.in_h; ++ih) {
      for (int iw = 0; iw < image.in_w; ++iw) {
        const int p = ih * image.in_w + iw;
        const float grad = DepthwiseInputGradAt(
            image, depthwise.mask, depthwise.dy, depthwise.w, depthwise.w_scale,
            depthwise.channels, depthwise.depth_multiplier, ih, iw, c);
        g[p] = pointwise.mask.Apply(grad, p * depthwise.channels + c);
      }
    }
    if (pointwise.dx != nullptr) {
      AddPointwiseInputGrad(pointwise.geometry, md, pointwise.weight,
                            pointwise.w_scale[c], c, pointwise.dx);
    }
    if (pointwise.update != nullptr) pointwise.update->Apply(md, pointwise.x, c);
  }
}

}  // namespace core
}  // namespace tflm_train
