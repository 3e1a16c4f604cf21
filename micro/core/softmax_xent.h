// Softmax cross-entropy on int8 logits (TFLT_SOFTMAX_XENT).
#ifndef TFLM_TRAIN_MICRO_CORE_SOFTMAX_XENT_H_
#define TFLM_TRAIN_MICRO_CORE_SOFTMAX_XENT_H_

#include <cstdint>

namespace tflm_train {
namespace core {

// exp(x) evaluated the same way everywhere (no libm exp): range reduction by
// ln 2 in two parts, a degree-6 Horner polynomial, then ldexpf. 0 below -87.
float ExpRef(float x);

// z[c] = (q[c] - zp) * scale; dlogits = softmax(z) - onehot(label);
// *loss = log(sum e) - (z[label] - max z). Requires 0 <= label < classes.
void SoftmaxXent(const int8_t* logits, int classes, float scale,
                 int32_t zero_point, int label, float* loss, float* dlogits);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_SOFTMAX_XENT_H_
