// TFLT_CONV_INPUT_GRAD: dx of CONV_2D / FULLY_CONNECTED (split weights allowed).
#include "core/conv_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_CONV_INPUT_GRAD";
enum Input { kLabel, kDy, kY, kW, kWTrain, kWScale, kNumInputs };

struct OpData {
  schema::ConvGradOptions options;
  core::ConvGeometry geometry;
  core::SplitWeight weight;  // shape only; the pointers are set at Eval
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
  TensorView label, w, w_train, w_scale, dx;
  kernels::Filter filter, train_filter;
  kernels::Image dy_image, dx_image;
  if (!check.Counts(kNumInputs, kNumInputs, 1) || !check.Label(kLabel, &label) ||
      !check.Gradient(kDy, kY, opt.act_min, opt.act_max, &dy_image,
                      &data.has_y) ||
      !check.Required(kW, "w", &w) || !check.AsFilter(w, "w", DType::kInt8, &filter) ||
      !check.Required(kWScale, "w_scale", &w_scale) ||
      !check.Vector(w_scale, "w_scale", DType::kFloat32, filter.out) ||
      !check.RequiredOutput(0, "dx", &dx) ||
      !check.AsImage(dx, "dx", DType::kFloat32, filter.fully_connected,
                     &dx_image)) {
    return false;
  }
  const kernels::Image input{opt.input_height, opt.input_width,
                             opt.input_channels};
  if (filter.fully_connected && (input.h != 1 || input.w != 1)) {
    return check.Fail("a FULLY_CONNECTED input is a 1x1 image");
  }
  if (!check.ImageIs(dx_image, "dx", input) ||
      !check.ImageIs(dy_image, "dy",
                     kernels::Image{dy_image.h, dy_image.w, filter.out})) {
    return false;
  }
  if (filter.in != input.c) return check.Fail("w's last dim must be input_channels");
  data.weight = core::SplitWeight{nullptr, nullptr, filter.out, filter.h,
                                  filter.w, filter.in, 0};
  if (check.Optional(kWTrain, &w_train)) {
    if (!check.TrainSlice(w_train, "w_train", filter, &train_filter)) {
      return false;
    }
    data.weight.train_channels = train_filter.in;
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
  core::SplitWeight weight = data.weight;
  weight.full = tensors.In<const int8_t>(kW);
  weight.train =
      tensors.In<const int8_t>(kWTrain, weight.train_channels > 0);
  const float* w_scale = tensors.In<const float>(kWScale);
  float* dx = tensors.Out<float>(0);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  core::ConvInputGrad(data.geometry, mask, dy, weight, w_scale, dx);
  return Status::kOk;
}

}  // namespace

const KernelOps& ConvInputGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
