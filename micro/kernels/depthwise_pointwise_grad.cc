// TFLT_DEPTHWISE_POINTWISE_GRAD: TFLT_DEPTHWISE_INPUT_GRAD, then the conv
// layer's TFLT_CONV_INPUT_GRAD (1x1 only) and TFLT_CONV_GRAD_UPDATE, streamed
// one of the conv's output channels at a time through the H' x W' float
// output g.
#include "core/conv_update.h"
#include "core/depthwise_pointwise_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"
#include "kernels/weight_grad_shape.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_DEPTHWISE_POINTWISE_GRAD";
enum Input {
  kLabel, kLr, kState, kDy, kDwY, kDwW, kDwWScale, kPwY, kPwW, kPwWScale, kX,
  kWTrain, kWQas, kBTrain, kBQas, kNumInputs
};
enum Output { kG, kDx };

struct OpData {
  schema::DepthwisePointwiseGradOptions options;
  core::ConvGeometry depthwise;  // input: the conv layer's output H' x W'
  core::WeightGradSpec spec;     // the conv layer's (bias only: positions)
  core::SplitWeight weight;      // shape only; the pointers are set at Eval
  int bias_channels;             // 0: no bias update
  bool has_dw_y, has_pw_y, has_dx, has_weight;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(
      ctx, kName, schema::ReadDepthwisePointwiseGradOptions, buffer, size);
}

// The depthwise layer: dy, its mask, filter and scales; fills *image (its
// input, the conv layer's output) and data.depthwise.
bool ValidateDepthwise(kernels::Checker& check, OpData& data,
                       kernels::Image* image) {
  const schema::ConvGradOptions& opt = data.options.depthwise;
  TensorView w_scale;
  kernels::Image dy;
  kernels::Filter filter;
  if (!check.Gradient(kDy, kDwY, opt.act_min, opt.act_max, &dy,
                      &data.has_dw_y) ||
      !check.DepthwiseFilter(kDwW, opt.input_channels, opt.depth_multiplier,
                             &filter) ||
      !check.ImageIs(dy, "dy", kernels::Image{dy.h, dy.w, filter.in}) ||
      !check.Required(kDwWScale, "dw_w_scale", &w_scale) ||
      !check.Vector(w_scale, "dw_w_scale", DType::kFloat32, filter.in)) {
    return false;
  }
  *image = kernels::Image{opt.input_height, opt.input_width, opt.input_channels};
  data.depthwise = kernels::GeometryOf(opt, *image, dy, filter);
  return check.Geometry(data.depthwise);
}

// The conv layer's input gradient: dx, w [C, 1, 1, I] (w_train, if any, is its
// trainable slice, already checked against x, which must be dx's shape) and
// w_scale; fills data.spec.geometry and data.weight.
bool ValidateInputGrad(kernels::Checker& check, OpData& data,
                       const kernels::Image& image) {
  TensorView dx, w, w_scale;
  kernels::Image dx_image;
  kernels::Filter filter;
  if (!check.RequiredOutput(kDx, "dx", &dx) ||
      !check.AsImage(dx, "dx", DType::kFloat32, false, &dx_image) ||
      !check.Required(kPwW, "pw_w", &w) ||
      !check.AsFilter(w, "pw_w", DType::kInt8, &filter) ||
      !check.Required(kPwWScale, "pw_w_scale", &w_scale) ||
      !check.Vector(w_scale, "pw_w_scale", DType::kFloat32, image.c)) {
    return false;
  }
  if (filter.fully_connected || filter.out != image.c || filter.h != 1 ||
      filter.w != 1 || filter.in != dx_image.c) {
    return check.Fail("pw_w must be [C, 1, 1, I]: C the depthwise layer's input "
                      "channels, I dx's");
  }
  const core::ConvGeometry& x = data.spec.geometry;
  if (data.has_weight && (x.kernel_h != 1 || x.kernel_w != 1)) {
    return check.Fail("with dx, w_train must be [C, 1, 1, K]");
  }
  if (data.has_weight &&
      !check.ImageIs(kernels::Image{x.in_h, x.in_w, data.spec.x_channels}, "x",
                     dx_image)) {
    return false;
  }
  data.weight = core::SplitWeight{
      nullptr, nullptr, filter.out, 1, 1, filter.in,
      data.has_weight ? data.spec.train_channels : 0};
  data.spec.geometry =
      kernels::GeometryOf(data.options.pointwise, dx_image, image, filter);
  return check.Geometry(data.spec.geometry);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::ConvUpdateOptions& pointwise = data.options.pointwise;
  kernels::Checker check(ctx, kName);
  TensorView label, g;
  kernels::Image image;
  const int outputs = ctx.NumOutputs();
  if (!check.Counts(kDwWScale + 1, kNumInputs, outputs == 2 ? 2 : 1) ||
      !check.Label(kLabel, &label) || !ValidateDepthwise(check, data, &image) ||
      !check.RequiredOutput(kG, "g", &g) ||
      !check.Vector(g, "g", DType::kFloat32, image.h * image.w) ||
      !check.Mask(kPwY, pointwise.act_min, pointwise.act_max, image,
                  &data.has_pw_y)) {
    return false;
  }
  if (pointwise.depthwise || pointwise.depth_multiplier != 1) {
    return check.Fail("the pointwise options must describe a conv (depthwise "
                      "false, depth_multiplier 1)");
  }
  if (!kernels::ValidateUpdate(check, pointwise,
                               {kX, kWTrain, kWQas, kBTrain, kBQas}, image,
                               &data.spec, &data.has_weight,
                               &data.bias_channels)) {
    return false;
  }
  const bool updates = data.has_weight || data.bias_channels > 0;
  if (updates && !check.TrainingStep(kLr, kState)) return false;
  data.has_dx = outputs == 2;
  if (data.has_dx) return ValidateInputGrad(check, data, image);
  return updates || check.Fail("nothing to compute: no dx and no update");
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  const schema::ConvGradOptions& dw_options = data.options.depthwise;
  const schema::ConvUpdateOptions& pw_options = data.options.pointwise;
  const bool has_bias = data.bias_channels > 0;
  const bool updates = data.has_weight || has_bias;
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* lr = tensors.In<const float>(kLr, updates);
  const int32_t* state = tensors.In<const int32_t>(kState, updates);
  core::DepthwiseBackward depthwise;
  depthwise.geometry = data.depthwise;
  depthwise.channels = dw_options.input_channels;
  depthwise.depth_multiplier = dw_options.depth_multiplier;
  depthwise.mask = tensors.Mask(kDwY, data.has_dw_y, dw_options.act_min,
                                dw_options.act_max);
  depthwise.dy = tensors.In<const float>(kDy);
  depthwise.w = tensors.In<const int8_t>(kDwW);
  depthwise.w_scale = tensors.In<const float>(kDwWScale);
  core::PointwiseBackward pointwise;
  pointwise.mask = tensors.Mask(kPwY, data.has_pw_y, pw_options.act_min,
                                pw_options.act_max);
  pointwise.geometry = data.spec.geometry;
  pointwise.weight = data.weight;
  pointwise.weight.full = tensors.In<const int8_t>(kPwW, data.has_dx);
  pointwise.w_scale = tensors.In<const float>(kPwWScale, data.has_dx);
  pointwise.dx = data.has_dx ? tensors.Out<float>(kDx) : nullptr;
  pointwise.x = tensors.In<const int8_t>(kX, data.has_weight);
  core::TrainableParam<int8_t> weight;
  weight.data = tensors.In<int8_t>(kWTrain, data.has_weight);
  weight.qas = tensors.In<const float>(kWQas, data.has_weight);
  weight.param_id = pw_options.weight_param_id;
  weight.channels = depthwise.channels;
  pointwise.weight.train = weight.data;
  core::TrainableParam<int32_t> bias;
  bias.data = tensors.In<int32_t>(kBTrain, has_bias);
  bias.qas = tensors.In<const float>(kBQas, has_bias);
  bias.param_id = pw_options.bias_param_id;
  bias.channels = data.bias_channels;
  float* g = tensors.Out<float>(kG);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  const core::TrainingStep step =
      updates ? core::TrainingStep{lr[0], pw_options.rounding, state[1]}
              : core::TrainingStep{};
  const core::ChannelUpdate update(data.spec, step, weight, bias);
  pointwise.update = updates ? &update : nullptr;
  core::DepthwisePointwiseGrad(depthwise, pointwise, g);
  return Status::kOk;
}

}  // namespace

const KernelOps& DepthwisePointwiseGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
