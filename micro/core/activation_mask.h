// TFLT_ACTIVATION_MASK: a layer's fused-activation mask, 8 elements a byte.
#ifndef TFLM_TRAIN_MICRO_CORE_ACTIVATION_MASK_H_
#define TFLM_TRAIN_MICRO_CORE_ACTIVATION_MASK_H_

#include <cstdint>

#include "core/conv_geometry.h"

namespace tflm_train {
namespace core {

// bits[i / 8] bit (i % 8) = act_min < y[i] < act_max for the `count` elements
// of y (row-major); the bits past `count` in the last byte are 0.
// bits holds ActivationMask::PackedBytes(count) bytes.
void PackActivationMask(const int8_t* y, int count, int32_t act_min,
                        int32_t act_max, uint8_t* bits);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_ACTIVATION_MASK_H_
