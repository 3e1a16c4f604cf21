// Seeding trainable variables from their flash constants (TFLT_TRAIN_INIT).
#ifndef TFLM_TRAIN_MICRO_CORE_TRAIN_INIT_H_
#define TFLM_TRAIN_MICRO_CORE_TRAIN_INIT_H_

#include <cstddef>
#include <cstdint>

namespace tflm_train {
namespace core {

// dst[r, :] = src[r, :dst_last] for each of `rows` rows; `element_size`
// bytes per element, dst_last <= src_last.
void CopyLeadingChannels(const void* src, void* dst, int rows, int src_last,
                         int dst_last, size_t element_size);

// state = [initialized, step]: step + 1 with int32 wrap-around.
int32_t NextStep(int32_t step);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_TRAIN_INIT_H_
