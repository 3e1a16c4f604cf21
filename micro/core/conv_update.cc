#include "core/conv_update.h"

namespace tflm_train {
namespace core {

ChannelUpdate::ChannelUpdate(const WeightGradSpec& spec,
                             const TrainingStep& step,
                             const TrainableParam<int8_t>& weight,
                             const TrainableParam<int32_t>& bias)
    : spec_(spec), weight_(weight), bias_(bias),
      weight_rule_(step.lr, step.rounding, weight.param_id, step.step),
      bias_rule_(step.lr, step.rounding, bias.param_id, step.step) {}

void ChannelUpdate::Apply(const ChannelGradient& md, const int8_t* x,
                          int o) const {
  if (bias_.data != nullptr && o < bias_.channels) {
    const float g = BiasGrad(spec_.geometry.out_h * spec_.geometry.out_w, md);
    bias_.data[o] =
        ApplyStep(bias_.data[o], bias_rule_.RoundedStep(g, bias_.qas[o], o));
  }
  if (weight_.data == nullptr) return;
  const float qas = weight_.qas[o];
  if (weight_.fraction != nullptr) {
    ForEachWeightGrad(spec_, md, x, o, [&](int element, float g) {
      ApplyFractionalStep(
          &weight_.data[element], &weight_.fraction[element],
          weight_rule_.RoundedStep(g, qas, element, kFractionUnit));
    });
    return;
  }
  ForEachWeightGrad(spec_, md, x, o, [&](int element, float g) {
    weight_.data[element] = ApplyStep(
        weight_.data[element], weight_rule_.RoundedStep(g, qas, element));
  });
}

void ConvGradUpdate(const WeightGradSpec& spec, const ActivationMask& mask,
                    const float* dy, const int8_t* x, const TrainingStep& step,
                    const TrainableParam<int8_t>& weight,
                    const TrainableParam<int32_t>& bias) {
  const ChannelUpdate update(spec, step, weight, bias);
  for (int o = 0; o < spec.out_channels; ++o) {
    update.Apply(ChannelGradient{dy, mask, spec.out_channels, o}, x, o);
  }
}

}  // namespace core
}  // namespace tflm_train
