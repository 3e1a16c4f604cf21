#include "core/softmax_xent.h"

#include <cmath>

namespace tflm_train {
namespace core {
namespace {

float Dequantize(int8_t q, float scale, int32_t zero_point) {
  return static_cast<float>(static_cast<int32_t>(q) - zero_point) * scale;
}

// ldexpf saturates long before 2^+-1000; clamping (NaN to 0) only keeps the
// conversion to int defined for any input.
int Exponent(float n) {
  if (std::isnan(n)) return 0;
  if (n > 1000.0f) return 1000;
  if (n < -1000.0f) return -1000;
  return static_cast<int>(n);
}

}  // namespace

float ExpRef(float x) {
  if (x < -87.0f) return 0.0f;
  const float n = floorf(x * 1.44269504f + 0.5f);
  // ln 2 = 0.693145752f + 1.42860677e-06f; the high part has few enough bits
  // that n * high is exact.
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-06f;
  float p = 1.38888889e-03f;
  p = p * r + 8.33333333e-03f;
  p = p * r + 4.16666667e-02f;
  p = p * r + 1.66666667e-01f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return ldexpf(p, Exponent(n));
}

void SoftmaxXent(const int8_t* logits, int classes, float scale,
                 int32_t zero_point, int label, float* loss, float* dlogits) {
  float max_z = Dequantize(logits[0], scale, zero_point);
  for (int c = 1; c < classes; ++c) {
    const float z = Dequantize(logits[c], scale, zero_point);
    if (z > max_z) max_z = z;
  }
  // dlogits holds e[c] until the sum is known.
  float sum = 0.0f;
  for (int c = 0; c < classes; ++c) {
    dlogits[c] = ExpRef(Dequantize(logits[c], scale, zero_point) - max_z);
    sum = sum + dlogits[c];
  }
  for (int c = 0; c < classes; ++c) {
    dlogits[c] = dlogits[c] / sum - (c == label ? 1.0f : 0.0f);
  }
  *loss = logf(sum) - (Dequantize(logits[label], scale, zero_point) - max_z);
}

}  // namespace core
}  // namespace tflm_train
