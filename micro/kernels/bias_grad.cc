// TFLT_BIAS_GRAD: db of the trainable bias (conventional schedule).
#include "core/conv_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_BIAS_GRAD";
enum Input { kLabel, kDy, kY, kNumInputs };

struct OpData {
  schema::ConvUpdateOptions options;
  kernels::Image dy;
  int bias_channels;  // db holds the first ones
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
  TensorView label, db;
  if (!check.Counts(kDy + 1, kNumInputs, 1) || !check.Label(kLabel, &label) ||
      !check.Gradient(kDy, kY, opt.act_min, opt.act_max, &data.dy,
                      &data.has_y) ||
      !check.RequiredOutput(0, "db", &db) ||
      !check.Type(db, "db", DType::kFloat32)) {
    return false;
  }
  if (db.rank != 1 || db.dims[0] < 1 || db.dims[0] > data.dy.c) {
    return check.Fail("db must be [Ob] with 1 <= Ob <= dy's channels");
  }
  data.bias_channels = db.dims[0];
  return true;
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* dy = tensors.In<const float>(kDy);
  const core::ActivationMask mask = tensors.Mask(
      kY, data.has_y, data.options.act_min, data.options.act_max);
  float* db = tensors.Out<float>(0);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  for (int o = 0; o < data.bias_channels; ++o) {
    db[o] = core::BiasGrad(data.dy.h * data.dy.w,
                           core::ChannelGradient{dy, mask, data.dy.c, o});
  }
  return Status::kOk;
}

}  // namespace

const KernelOps& BiasGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
