// TFLT_DEPTHWISE_INPUT_GRAD: dx of DEPTHWISE_CONV_2D.
#include "core/depthwise_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_DEPTHWISE_INPUT_GRAD";
enum Input { kLabel, kDy, kY, kW, kWScale, kNumInputs };

struct OpData {
  schema::ConvGradOptions options;
  core::ConvGeometry geometry;
  bool has_y;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadConvGradOptions, buffer,
                                          size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::ConvGradOptions& opt = data.options;
  kernels::Checker check(ctx, kName);
  TensorView label, w_scale, dx;
  kernels::Filter filter;
  kernels::Image dy_image, dx_image;
  if (!check.Counts(kNumInputs, kNumInputs, 1) || !check.Label(kLabel, &label) ||
      !check.Gradient(kDy, kY, opt.act_min, opt.act_max, &dy_image,
                      &data.has_y) ||
      !check.DepthwiseFilter(kW, opt.input_channels, opt.depth_multiplier,
                             &filter) ||
      !check.RequiredOutput(0, "dx", &dx) ||
      !check.AsImage(dx, "dx", DType::kFloat32, false, &dx_image)) {
    return false;
  }
  const kernels::Image input{opt.input_height, opt.input_width,
                             opt.input_channels};
  const int channels = filter.in;
  if (!check.ImageIs(dx_image, "dx", input) ||
      !check.ImageIs(dy_image, "dy",
                     kernels::Image{dy_image.h, dy_image.w, channels}) ||
      !check.Required(kWScale, "w_scale", &w_scale) ||
      !check.Vector(w_scale, "w_scale", DType::kFloat32, channels)) {
    return false;
  }
  data.geometry = kernels::GeometryOf(opt, input, dy_image, filter);
  return check.Geometry(data.geometry);
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* dy = tensors.In<const float>(kDy);
  const core::ActivationMask mask = tensors.Mask(
      kY, data.has_y, data.options.act_min, data.options.act_max);
  const int8_t* w = tensors.In<const int8_t>(kW);
  const float* w_scale = tensors.In<const float>(kWScale);
  float* dx = tensors.Out<float>(0);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  core::DepthwiseInputGrad(data.geometry, mask, dy, w, w_scale,
                           data.options.input_channels,
                           data.options.depth_multiplier, dx);
  return Status::kOk;
}

}  // namespace

const KernelOps& DepthwiseInputGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
