#include "core/depthwise_pointwise_grad.h"

#include "core/depthwise_grad.h"

namespace tflm_train {
namespace core {
namespace {

// Channel group c of the depthwise output gradient, masked, into md
// [Ho, Wo, M]: the projection's input gradient at channels c*M + j.
void ProjectGroup(const ProjectionBackward& projection,
                  const DepthwiseBackward& depthwise, int c, float* md) {
  const ConvGeometry& g = projection.geometry;
  const int m = depthwise.depth_multiplier;
  const int channels = depthwise.channels * m;
  for (int oh = 0; oh < g.in_h; ++oh) {
    for (int ow = 0; ow < g.in_w; ++ow) {
      const int p = oh * g.in_w + ow;
      for (int j = 0; j < m; ++j) {
        const int o = c * m + j;
        const float grad =
            ConvInputGradAt(g, projection.mask, projection.dy,
                            projection.weight, projection.w_scale, oh, ow, o);
        md[p * m + j] = depthwise.mask.Apply(grad, p * channels + o);
      }
    }
  }
}

}  // namespace

void DepthwisePointwiseGrad(const DepthwiseBackward& depthwise,
                            const PointwiseBackward& pointwise, float* g,
                            const ProjectionBackward* projection) {
  const ConvGeometry& image = depthwise.geometry;
  const int m = depthwise.depth_multiplier;
  if (pointwise.dx != nullptr) {
    const ConvGeometry& x = pointwise.geometry;
    const int elements = x.in_h * x.in_w * pointwise.weight.in_channels;
    for (int e = 0; e < elements; ++e) pointwise.dx[e] = 0.0f;
  }
  // Block mode: one group's masked depthwise output gradient, after g.
  float* group_md = g + image.in_h * image.in_w;
  const ChannelGradient md{g, ActivationMask{}, 1, 0};
  for (int c = 0; c < depthwise.channels; ++c) {
    ChannelGradient group{depthwise.dy, depthwise.mask, depthwise.channels * m,
                          c * m};
    if (projection != nullptr) {
      ProjectGroup(*projection, depthwise, c, group_md);
      group = ChannelGradient{group_md, ActivationMask{}, m, 0};
    }
    for (int ih = 0; ih < image.in_h; ++ih) {
      for (int iw = 0; iw < image.in_w; ++iw) {
        const int p = ih * image.in_w + iw;
        const float grad =
            DepthwiseInputGradAt(image, group, depthwise.w, depthwise.w_scale,
                                 depthwise.channels, m, ih, iw, c);
        g[p] = pointwise.mask.Apply(grad, p * depthwise.channels + c);
      }
    }
    if (pointwise.dx != nullptr) {
      AddPointwiseInputGrad(pointwise.geometry, md, pointwise.weight,
                            pointwise.w_scale[c], c, pointwise.dx);
    }
    if (pointwise.update != nullptr) pointwise.update->Apply(md, pointwise.x, c);
    if (projection != nullptr && projection->update != nullptr) {
      // After group c's input gradient read its depthwise weights.
      for (int j = 0; j < m; ++j) {
        projection->update->Apply(ChannelGradient{group_md, ActivationMask{}, m, j},
                                  projection->x, c * m + j);
      }
    }
  }
}

}  // namespace core
}  // namespace tflm_train
