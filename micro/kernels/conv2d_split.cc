// TFLT_CONV_2D_SPLIT: int8 per-channel CONV_2D / FULLY_CONNECTED whose weight
// is split into a frozen constant and a trainable variable.
#include "core/split_conv.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_CONV_2D_SPLIT";
enum Input { kX, kW, kWTrain, kBias, kMultiplier, kShift, kNumInputs };

struct OpData {
  schema::SplitConvOptions options;
  core::QuantizedConvParams params;
  core::SplitWeight weight;  // shape only; the pointers are set at Eval
  bool has_bias;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadSplitConvOptions, buffer,
                                          size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::SplitConvOptions& opt = data.options;
  kernels::Checker check(ctx, kName);
  TensorView x, w, w_train, y;
  kernels::Filter filter, train_filter;
  kernels::Image x_image, y_image;
  if (!check.Counts(kNumInputs, kNumInputs, 1) ||
      !check.Required(kW, "w", &w) ||
      !check.AsFilter(w, "w", DType::kInt8, &filter) ||
      !check.Required(kX, "x", &x) ||
      !check.AsImage(x, "x", DType::kInt8, filter.fully_connected, &x_image) ||
      !check.RequiredOutput(0, "y", &y) ||
      !check.AsImage(y, "y", DType::kInt8, false, &y_image) ||
      !check.ImageIs(x_image, "x", kernels::Image{x_image.h, x_image.w, filter.in}) ||
      !check.ImageIs(y_image, "y", kernels::Image{y_image.h, y_image.w, filter.out}) ||
      !check.OutputStage(opt, kBias, kMultiplier, kShift, filter.out,
                         &data.has_bias)) {
    return false;
  }
  data.weight = core::SplitWeight{nullptr, nullptr, filter.out, filter.h,
                                  filter.w, filter.in, 0};
  if (check.Optional(kWTrain, &w_train)) {
    if (!check.TrainSlice(w_train, "w_train", filter, &train_filter)) {
      return false;
    }
    data.weight.train_channels = train_filter.in;
  }
  data.params = kernels::QuantizedConvOf(opt, x_image, y_image, filter);
  return check.Geometry(data.params.geometry);
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int8_t* x = tensors.In<const int8_t>(kX);
  core::SplitWeight weight = data.weight;
  weight.full = tensors.In<const int8_t>(kW);
  weight.train = tensors.In<const int8_t>(kWTrain, weight.train_channels > 0);
  const int32_t* bias = tensors.In<const int32_t>(kBias, data.has_bias);
  const int32_t* multiplier = tensors.In<const int32_t>(kMultiplier);
  const int32_t* shift = tensors.In<const int32_t>(kShift);
  int8_t* y = tensors.Out<int8_t>(0);
  if (!tensors.ok()) return Status::kError;
  core::SplitConv(data.params, x, weight, bias, multiplier, shift, y);
  return Status::kOk;
}

}  // namespace

const KernelOps& Conv2DSplitOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
