#include "core/activation_mask.h"

namespace tflm_train {
namespace core {

void PackActivationMask(const int8_t* y, int count, int32_t act_min,
                        int32_t act_max, uint8_t* bits) {
  // The backward ops' own test, so a packed mask passes exactly what y would.
  const ActivationMask mask{y, act_min, act_max};
  for (int byte = 0; byte < ActivationMask::PackedBytes(count); ++byte) {
    const int first = byte * 8;
    const int end = first + 8 < count ? first + 8 : count;
    uint32_t packed = 0;
    for (int i = first; i < end; ++i) {
      packed |= static_cast<uint32_t>(mask.Passes(i)) << (i - first);
    }
    bits[byte] = static_cast<uint8_t>(packed);
  }
}

}  // namespace core
}  // namespace tflm_train
