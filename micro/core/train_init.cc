#include "core/train_init.h"

#include <cstring>

namespace tflm_train {
namespace core {

void CopyLeadingChannels(const void* src, void* dst, int rows, int src_last,
                         int dst_last, size_t element_size) {
  const uint8_t* from = static_cast<const uint8_t*>(src);
  uint8_t* to = static_cast<uint8_t*>(dst);
  const size_t src_row = static_cast<size_t>(src_last) * element_size;
  const size_t dst_row = static_cast<size_t>(dst_last) * element_size;
  for (int r = 0; r < rows; ++r) {
    memcpy(to + r * dst_row, from + r * src_row, dst_row);
  }
}

int32_t NextStep(int32_t step) {
  return static_cast<int32_t>(static_cast<uint32_t>(step) + 1U);
}

}  // namespace core
}  // namespace tflm_train
