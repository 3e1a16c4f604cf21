// TFLT_CONV_GRAD_UPDATE: the fused (reordered) gradient + QAS SGD update of a
// conv / FC / depthwise layer's trainable weight and bias.
#include "core/conv_update.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"
#include "kernels/weight_grad_shape.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_CONV_GRAD_UPDATE";
enum Input {
  kLabel, kLr, kState, kDy, kY, kX, kWTrain, kWQas, kBTrain, kBQas,
  kWFraction, kNumInputs
};

struct OpData {
  schema::ConvUpdateOptions options;
  core::WeightGradSpec spec;
  int bias_channels;  // 0: no bias update
  bool has_y, has_weight, has_fraction;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadConvUpdateOptions,
                                          buffer, size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::ConvUpdateOptions& opt = data.options;
  kernels::Checker check(ctx, kName);
  TensorView label;
  kernels::Image dy;
  if (!check.Counts(kX + 1, kNumInputs, 0) || !check.Label(kLabel, &label) ||
      !check.TrainingStep(kLr, kState) ||
      !check.Gradient(kDy, kY, opt.act_min, opt.act_max, &dy, &data.has_y) ||
      !kernels::ValidateUpdate(
          check, opt, {kX, kWTrain, kWQas, kBTrain, kBQas, kWFraction}, dy,
          &data.spec, &data.has_weight, &data.bias_channels,
          &data.has_fraction)) {
    return false;
  }
  return data.has_weight || data.bias_channels > 0 ||
         check.Fail("nothing to update");
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  const bool has_bias = data.bias_channels > 0;
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* lr = tensors.In<const float>(kLr);
  const int32_t* state = tensors.In<const int32_t>(kState);
  const float* dy = tensors.In<const float>(kDy);
  const core::ActivationMask mask = tensors.Mask(
      kY, data.has_y, data.options.act_min, data.options.act_max);
  const int8_t* x = tensors.In<const int8_t>(kX, data.has_weight);
  core::TrainableParam<int8_t> weight;
  weight.data = tensors.In<int8_t>(kWTrain, data.has_weight);
  weight.fraction = tensors.In<int8_t>(kWFraction, data.has_fraction);
  weight.qas = tensors.In<const float>(kWQas, data.has_weight);
  weight.param_id = data.options.weight_param_id;
  weight.channels = data.spec.out_channels;
  core::TrainableParam<int32_t> bias;
  bias.data = tensors.In<int32_t>(kBTrain, has_bias);
  bias.qas = tensors.In<const float>(kBQas, has_bias);
  bias.param_id = data.options.bias_param_id;
  bias.channels = data.bias_channels;
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  const core::TrainingStep step{lr[0], data.options.rounding, state[1]};
  core::ConvGradUpdate(data.spec, mask, dy, x, step, weight, bias);
  return Status::kOk;
}

}  // namespace

const KernelOps& ConvGradUpdateOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
