// TFLT_CONV_WEIGHT_GRAD: dW of the trainable weight (conventional schedule).
#include "core/conv_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"
#include "kernels/weight_grad_shape.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_CONV_WEIGHT_GRAD";
enum Input { kLabel, kDy, kY, kX, kNumInputs };

struct OpData {
  schema::ConvUpdateOptions options;
  core::WeightGradSpec spec;
  bool has_y;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadConvUpdateOptions,
                                          buffer, size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::ConvUpdateOptions& opt = data.options;
  kernels::Checker check(ctx, kName);
  TensorView label, x, dw;
  kernels::Image dy;
  return check.Counts(kNumInputs, kNumInputs, 1) &&
         check.Label(kLabel, &label) &&
         check.Gradient(kDy, kY, opt.act_min, opt.act_max, &dy, &data.has_y) &&
         check.Required(kX, "x", &x) && check.RequiredOutput(0, "dw", &dw) &&
         kernels::ValidateWeightGrad(check, opt, dw, "dw", DType::kFloat32, dy,
                                     x, &data.spec);
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* dy = tensors.In<const float>(kDy);
  const core::ActivationMask mask = tensors.Mask(
      kY, data.has_y, data.options.act_min, data.options.act_max);
  const int8_t* x = tensors.In<const int8_t>(kX);
  float* dw = tensors.Out<float>(0);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  for (int o = 0; o < data.spec.out_channels; ++o) {
    const core::ChannelGradient md{dy, mask, data.spec.out_channels, o};
    core::ForEachWeightGrad(data.spec, md, x, o,
                            [dw](int element, float g) { dw[element] = g; });
  }
  return Status::kOk;
}

}  // namespace

const KernelOps& ConvWeightGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
