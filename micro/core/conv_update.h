// TFLT_CONV_GRAD_UPDATE: the reordered schedule, computing each output
// channel's parameter gradients and applying them at once, so the full dW
// never exists.
#ifndef TFLM_TRAIN_MICRO_CORE_CONV_UPDATE_H_
#define TFLM_TRAIN_MICRO_CORE_CONV_UPDATE_H_

#include <cstdint>

#include "core/conv_grad.h"
#include "core/sgd_update.h"

namespace tflm_train {
namespace core {

// A trainable variable and its per-output-channel QAS scales; `data` null
// when the layer does not train it.
template <typename T>
struct TrainableParam {
  T* data = nullptr;
  const float* qas = nullptr;
  int32_t param_id = 0;
  // Output channels held (a bias may train only the first ones; a weight
  // always has all O).
  int channels = 0;
  // A weight's fractional bits (ApplyFractionalStep); null: none.
  int8_t* fraction = nullptr;
};

struct TrainingStep {
  float lr = 0.0f;
  Rounding rounding = Rounding::kNearest;
  int32_t step = 0;  // state[1]
};

// One output channel's fused gradient + update at a time: TFLT_CONV_GRAD_UPDATE
// runs it for every channel of dy, TFLT_DEPTHWISE_POINTWISE_GRAD for each
// channel as soon as that channel's gradient exists.
class ChannelUpdate {
 public:
  ChannelUpdate(const WeightGradSpec& spec, const TrainingStep& step,
                const TrainableParam<int8_t>& weight,
                const TrainableParam<int32_t>& bias);

  // Updates output channel o's trainable weight row and bias from its
  // gradient `md` (over the spec's output positions) and the layer input x.
  void Apply(const ChannelGradient& md, const int8_t* x, int o) const;

 private:
  WeightGradSpec spec_;
  TrainableParam<int8_t> weight_;
  TrainableParam<int32_t> bias_;
  UpdateRule weight_rule_;
  UpdateRule bias_rule_;
};

void ConvGradUpdate(const WeightGradSpec& spec, const ActivationMask& mask,
                    const float* dy, const int8_t* x, const TrainingStep& step,
                    const TrainableParam<int8_t>& weight,
                    const TrainableParam<int32_t>& bias);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_CONV_UPDATE_H_
