#include "core/conv_update.h"

namespace tflm_train {
namespace core {

void ConvGradUpdate(const WeightGradSpec& spec, const ActivationMask& mask,
                    const float* dy, const int8_t* x, const TrainingStep& step,
                    const TrainableParam<int8_t>& weight,
                    const TrainableParam<int32_t>& bias) {
  const UpdateRule weight_rule(step.lr, step.rounding, weight.param_id,
                               step.step);
  const UpdateRule bias_rule(step.lr, step.rounding, bias.param_id, step.step);
  const int positions = spec.geometry.out_h * spec.geometry.out_w;
  for (int o = 0; o < spec.out_channels; ++o) {
    if (bias.data != nullptr && o < bias.channels) {
      const float g = BiasGrad(positions, spec.out_channels, mask, dy, o);
      bias.data[o] = ApplyStep(bias.data[o], bias_rule.RoundedStep(g, bias.qas[o], o));
    }
    if (weight.data == nullptr) continue;
    const float qas = weight.qas[o];
    ForEachWeightGrad(spec, mask, dy, x, o, [&](int element, float g) {
      weight.data[element] = ApplyStep(
          weight.data[element], weight_rule.RoundedStep(g, qas, element));
    });
  }
}

}  // namespace core
}  // namespace tflm_train
