// Gradient of a global average pool (MEAN over H, W).
#ifndef TFLM_TRAIN_MICRO_CORE_MEAN_GRAD_H_
#define TFLM_TRAIN_MICRO_CORE_MEAN_GRAD_H_

namespace tflm_train {
namespace core {

// dx[h, w, c] = dy[c] * (1.0f / (float)(H * W)); dx is [1, H, W, C].
void MeanGrad(const float* dy, int height, int width, int channels, float* dx);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_MEAN_GRAD_H_
