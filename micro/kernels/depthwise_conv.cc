// TFLT_DEPTHWISE_CONV_2D: int8 per-channel DEPTHWISE_CONV_2D with explicit
// padding (a folded PAD never materialises) and its requantisation in flash
// constants (stock TFLM computes it into the arena at Prepare).
#include "core/depthwise_conv.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_DEPTHWISE_CONV_2D";
enum Input { kX, kW, kBias, kMultiplier, kShift, kNumInputs };

struct OpData {
  schema::DepthwiseConvOptions options;
  core::DepthwiseConvParams params;
  bool has_bias;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadDepthwiseConvOptions,
                                          buffer, size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::DepthwiseConvOptions& opt = data.options;
  kernels::Checker check(ctx, kName);
  TensorView x, y;
  kernels::Filter filter;
  kernels::Image x_image, y_image;
  if (!check.Counts(kNumInputs, kNumInputs, 1) ||
      !check.Required(kX, "x", &x) ||
      !check.AsImage(x, "x", DType::kInt8, false, &x_image) ||
      !check.DepthwiseFilter(kW, x_image.c, opt.depth_multiplier, &filter) ||
      !check.RequiredOutput(0, "y", &y) ||
      !check.AsImage(y, "y", DType::kInt8, false, &y_image) ||
      !check.ImageIs(y_image, "y", kernels::Image{y_image.h, y_image.w, filter.in}) ||
      !check.OutputStage(opt, kBias, kMultiplier, kShift, filter.in,
                         &data.has_bias)) {
    return false;
  }
  data.params = core::DepthwiseConvParams{
      kernels::QuantizedConvOf(opt, x_image, y_image, filter), x_image.c,
      opt.depth_multiplier};
  return check.Geometry(data.params.conv.geometry);
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int8_t* x = tensors.In<const int8_t>(kX);
  const int8_t* w = tensors.In<const int8_t>(kW);
  const int32_t* bias = tensors.In<const int32_t>(kBias, data.has_bias);
  const int32_t* multiplier = tensors.In<const int32_t>(kMultiplier);
  const int32_t* shift = tensors.In<const int32_t>(kShift);
  int8_t* y = tensors.Out<int8_t>(0);
  if (!tensors.ok()) return Status::kError;
  core::DepthwiseConv(data.params, x, w, bias, multiplier, shift, y);
  return Status::kOk;
}

}  // namespace

const KernelOps& DepthwiseConvOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
