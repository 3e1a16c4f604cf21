#include "core/mean_grad.h"

namespace tflm_train {
namespace core {

void MeanGrad(const float* dy, int height, int width, int channels, float* dx) {
  const float inverse_area = 1.0f / static_cast<float>(height * width);
  for (int pixel = 0; pixel < height * width; ++pixel) {
    for (int c = 0; c < channels; ++c) {
      dx[pixel * channels + c] = dy[c] * inverse_area;
    }
  }
}

}  // namespace core
}  // namespace tflm_train
