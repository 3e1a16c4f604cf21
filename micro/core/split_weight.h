// An int8 conv/FC weight [O, kh, kw, I] whose first K input channels come from
// a trainable variable (split weights, input-channel ratio < 1).
#ifndef TFLM_TRAIN_MICRO_CORE_SPLIT_WEIGHT_H_
#define TFLM_TRAIN_MICRO_CORE_SPLIT_WEIGHT_H_

#include <cstdint>

namespace tflm_train {
namespace core {

struct SplitWeight {
  const int8_t* full = nullptr;   // [O, kh, kw, I]
  const int8_t* train = nullptr;  // [O, kh, kw, K], or null: all from `full`
  int out_channels = 0;
  int kernel_h = 1, kernel_w = 1;
  int in_channels = 0;
  int train_channels = 0;  // K; ignored when `train` is null

  int8_t At(int o, int kh, int kw, int i) const {
    const int tap = (o * kernel_h + kh) * kernel_w + kw;
    if (train != nullptr && i < train_channels) {
      return train[tap * train_channels + i];
    }
    return full[tap * in_channels + i];
  }
};

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_SPLIT_WEIGHT_H_
