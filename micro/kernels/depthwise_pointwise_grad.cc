// TFLT_DEPTHWISE_POINTWISE_GRAD: TFLT_DEPTHWISE_INPUT_GRAD, then the conv
// layer's TFLT_CONV_INPUT_GRAD (1x1 only) and TFLT_CONV_GRAD_UPDATE, streamed
// one of the conv's output channels at a time through the H' x W' float
// output g; in block mode (proj_w given) after the projection's
// TFLT_CONV_INPUT_GRAD and with the depthwise layer's TFLT_CONV_GRAD_UPDATE,
// streamed one depthwise channel group at a time through the rest of g.
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
  kWTrain, kWQas, kBTrain, kBQas,
  // Block mode.
  kProjY, kProjW, kProjWTrain, kProjWScale, kDwX, kDwWTrain, kDwWQas, kDwBTrain,
  kDwBQas, kNumInputs
};
enum Output { kG, kDx };

// Block mode's part of the op data, allocated only when the options have a
// projection (input_channels >= 1), so other ops keep their smaller op data.
struct BlockData {
  schema::ConvGradOptions projection_options;
  schema::ConvUpdateOptions depthwise_update;
  core::ConvGeometry projection;  // input: the depthwise layer's output
  int projection_out_channels;
  int projection_train_channels;  // 0: the projection's weight is not split
  int depthwise_bias_channels;    // 0: no bias update
  bool has_proj_y, has_dw_weight;
};

struct OpData {
  schema::ConvGradOptions options_depthwise;
  schema::ConvUpdateOptions options_pointwise;
  core::ConvGeometry depthwise;  // input: the conv layer's output H' x W'
  core::WeightGradSpec spec;     // the conv layer's (bias only: positions)
  core::SplitWeight weight;      // shape only; the pointers are set at Eval
  BlockData* block;              // null: not block mode
  int bias_channels;             // 0: no bias update
  bool has_dw_y, has_pw_y, has_dx, has_weight;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  schema::DepthwisePointwiseGradOptions options;
  if (!schema::ReadDepthwisePointwiseGradOptions(buffer, size, &options)) {
    ctx.Report("%s: malformed custom options", kName);
    return nullptr;
  }
  OpData* data = kernels::NewOpData<OpData>(ctx, kName);
  if (data == nullptr) return nullptr;
  data->options_depthwise = options.depthwise;
  data->options_pointwise = options.pointwise;
  if (options.projection.input_channels == 0) return data;
  data->block = kernels::NewOpData<BlockData>(ctx, kName);
  if (data->block == nullptr) return nullptr;
  data->block->projection_options = options.projection;
  data->block->depthwise_update = options.depthwise_update;
  return data;
}

// Block mode: the projection's output gradient dy, its mask, filter
// [O, kh, kw, C*M] (and trainable slice) and scales; fills *dw_out (its
// input, the depthwise layer's output) and the block's projection data.
bool ValidateProjection(kernels::Checker& check, BlockData& block,
                        kernels::Image* dw_out) {
  const schema::ConvGradOptions& opt = block.projection_options;
  TensorView w, w_train, w_scale;
  kernels::Image dy;
  kernels::Filter filter, train_filter;
  if (!check.Gradient(kDy, kProjY, opt.act_min, opt.act_max, &dy,
                      &block.has_proj_y) ||
      !check.Required(kProjW, "proj_w", &w) ||
      !check.AsFilter(w, "proj_w", DType::kInt8, &filter) ||
      !check.Required(kProjWScale, "proj_w_scale", &w_scale) ||
      !check.Vector(w_scale, "proj_w_scale", DType::kFloat32, filter.out)) {
    return false;
  }
  *dw_out = kernels::Image{opt.input_height, opt.input_width,
                           opt.input_channels};
  if (filter.fully_connected || filter.out != dy.c ||
      filter.in != dw_out->c) {
    return check.Fail("proj_w must be [O, kh, kw, C*M]: O dy's channels, C*M "
                      "the projection's input_channels");
  }
  block.projection_out_channels = filter.out;
  block.projection_train_channels = 0;
  if (check.Optional(kProjWTrain, &w_train)) {
    if (!check.TrainSlice(w_train, "proj_w_train", filter, &train_filter)) {
      return false;
    }
    block.projection_train_channels = train_filter.in;
  }
  block.projection = kernels::GeometryOf(opt, *dw_out, dy, filter);
  return check.Geometry(block.projection);
}

// The depthwise layer: its output gradient dy (block mode: its shape dw_out,
// the projection's input), mask, filter and scales; fills *image (its input,
// the conv layer's output) and data.depthwise.
bool ValidateDepthwise(kernels::Checker& check, OpData& data,
                       const kernels::Image* dw_out, kernels::Image* image) {
  const schema::ConvGradOptions& opt = data.options_depthwise;
  TensorView w_scale;
  kernels::Image dy;
  kernels::Filter filter;
  if (dw_out != nullptr) dy = *dw_out;
  const bool gradient =
      dw_out == nullptr
          ? check.Gradient(kDy, kDwY, opt.act_min, opt.act_max, &dy,
                           &data.has_dw_y)
          : check.Mask(kDwY, opt.act_min, opt.act_max, dy, &data.has_dw_y);
  if (!gradient ||
      !check.DepthwiseFilter(kDwW, opt.input_channels, opt.depth_multiplier,
                             &filter) ||
      !check.ImageIs(dy, dw_out == nullptr ? "dy" : "the projection's input",
                     kernels::Image{dy.h, dy.w, filter.in}) ||
      !check.Required(kDwWScale, "dw_w_scale", &w_scale) ||
      !check.Vector(w_scale, "dw_w_scale", DType::kFloat32, filter.in)) {
    return false;
  }
  *image = kernels::Image{opt.input_height, opt.input_width, opt.input_channels};
  data.depthwise = kernels::GeometryOf(opt, *image, dy, filter);
  return check.Geometry(data.depthwise);
}

// Block mode: the depthwise layer's update (of its output gradient dw_out),
// whose options, x and weight must be that layer's: Eval then derives its
// WeightGradSpec from data.depthwise (DepthwiseSpec).
bool ValidateDepthwiseUpdate(kernels::Checker& check, OpData& data,
                             const kernels::Image& image,
                             const kernels::Image& dw_out) {
  BlockData& block = *data.block;
  const schema::ConvUpdateOptions& opt = block.depthwise_update;
  const schema::ConvGradOptions& depthwise = data.options_depthwise;
  if (!opt.depthwise || opt.depth_multiplier != depthwise.depth_multiplier ||
      opt.act_min != depthwise.act_min || opt.act_max != depthwise.act_max ||
      opt.stride_h != depthwise.stride_h || opt.stride_w != depthwise.stride_w ||
      opt.dilation_h != depthwise.dilation_h ||
      opt.dilation_w != depthwise.dilation_w ||
      opt.pad_top != depthwise.pad_top || opt.pad_left != depthwise.pad_left) {
    return check.Fail("the depthwise_update options must describe the "
                      "depthwise layer (depthwise true, its window, "
                      "depth_multiplier and activation range)");
  }
  core::WeightGradSpec spec;
  if (!kernels::ValidateUpdate(check, opt,
                               {kDwX, kDwWTrain, kDwWQas, kDwBTrain, kDwBQas},
                               dw_out, &spec, &block.has_dw_weight,
                               &block.depthwise_bias_channels)) {
    return false;
  }
  if (!block.has_dw_weight) return true;
  TensorView w, w_train;
  check.Optional(kDwW, &w);
  check.Optional(kDwWTrain, &w_train);
  return check.SameDims(w_train, "dw_w_train", w, "dw_w") &&
         check.ImageIs(kernels::Image{spec.geometry.in_h, spec.geometry.in_w,
                                      spec.x_channels},
                       "dw_x", image);
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
      kernels::GeometryOf(data.options_pointwise, dx_image, image, filter);
  return check.Geometry(data.spec.geometry);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::ConvUpdateOptions& pointwise = data.options_pointwise;
  kernels::Checker check(ctx, kName);
  TensorView label, g, proj_w;
  kernels::Image image, dw_out;
  const int outputs = ctx.NumOutputs();
  if (!check.Counts(kDwWScale + 1, kNumInputs, outputs == 2 ? 2 : 1) ||
      !check.Label(kLabel, &label)) {
    return false;
  }
  BlockData* block = data.block;
  if (check.Optional(kProjW, &proj_w) != (block != nullptr)) {
    return check.Fail("block mode needs both proj_w and the projection "
                      "options (input_channels >= 1)");
  }
  if ((block != nullptr && !ValidateProjection(check, *block, &dw_out)) ||
      !ValidateDepthwise(check, data, block != nullptr ? &dw_out : nullptr,
                         &image)) {
    return false;
  }
  const int group =
      block != nullptr
          ? dw_out.h * dw_out.w * data.options_depthwise.depth_multiplier
          : 0;
  if (!check.RequiredOutput(kG, "g", &g) ||
      !check.Vector(g, "g", DType::kFloat32, image.h * image.w + group) ||
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
  if (block != nullptr) {
    if (!ValidateDepthwiseUpdate(check, data, image, dw_out)) return false;
  } else {
    for (int index = kProjY; index < kNumInputs; ++index) {
      TensorView unused;
      if (check.Optional(index, &unused)) {
        return check.Fail("inputs after b_qas need proj_w (block mode)");
      }
    }
  }
  const bool updates = data.has_weight || data.bias_channels > 0 ||
                       (block != nullptr && (block->has_dw_weight ||
                                             block->depthwise_bias_channels > 0));
  if (updates && !check.TrainingStep(kLr, kState)) return false;
  data.has_dx = outputs == 2;
  if (data.has_dx) return ValidateInputGrad(check, data, image);
  return data.has_weight || data.bias_channels > 0 ||
         check.Fail("nothing to compute: no dx and no update");
}

// The depthwise update's weight gradient: the depthwise layer's geometry
// (ValidateDepthwiseUpdate checked the update has it).
core::WeightGradSpec DepthwiseSpec(const OpData& data) {
  const schema::ConvGradOptions& depthwise = data.options_depthwise;
  const schema::ConvUpdateOptions& update = data.block->depthwise_update;
  core::WeightGradSpec spec;
  spec.geometry = data.depthwise;
  spec.out_channels = depthwise.input_channels * depthwise.depth_multiplier;
  spec.x_channels = depthwise.input_channels;
  spec.train_channels = spec.out_channels;
  spec.depthwise = true;
  spec.depth_multiplier = depthwise.depth_multiplier;
  spec.x_zero_point = update.x_zero_point;
  spec.x_scale = update.x_scale;
  return spec;
}

core::TrainableParam<int8_t> Weight(kernels::EvalTensors& tensors, int index,
                                    int qas, bool present, int32_t param_id,
                                    int channels) {
  core::TrainableParam<int8_t> weight;
  weight.data = tensors.In<int8_t>(index, present);
  weight.qas = tensors.In<const float>(qas, present);
  weight.param_id = param_id;
  weight.channels = channels;
  return weight;
}

core::TrainableParam<int32_t> Bias(kernels::EvalTensors& tensors, int index,
                                   int qas, int channels, int32_t param_id) {
  core::TrainableParam<int32_t> bias;
  bias.data = tensors.In<int32_t>(index, channels > 0);
  bias.qas = tensors.In<const float>(qas, channels > 0);
  bias.param_id = param_id;
  bias.channels = channels;
  return bias;
}

core::TrainingStep StepOf(bool updates, const float* lr,
                          const schema::ConvUpdateOptions& options,
                          const int32_t* state) {
  return updates ? core::TrainingStep{lr[0], options.rounding, state[1]}
                 : core::TrainingStep{};
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  const BlockData* block = data.block;
  const schema::ConvGradOptions& dw_options = data.options_depthwise;
  const schema::ConvUpdateOptions& pw_options = data.options_pointwise;
  const bool pw_updates = data.has_weight || data.bias_channels > 0;
  const bool dw_updates =
      block != nullptr &&
      (block->has_dw_weight || block->depthwise_bias_channels > 0);
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* lr = tensors.In<const float>(kLr, pw_updates || dw_updates);
  const int32_t* state =
      tensors.In<const int32_t>(kState, pw_updates || dw_updates);
  core::DepthwiseBackward depthwise;
  depthwise.geometry = data.depthwise;
  depthwise.channels = dw_options.input_channels;
  depthwise.depth_multiplier = dw_options.depth_multiplier;
  depthwise.mask = tensors.Mask(kDwY, data.has_dw_y, dw_options.act_min,
                                dw_options.act_max);
  depthwise.dy = block != nullptr ? nullptr : tensors.In<const float>(kDy);
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
  const core::TrainableParam<int8_t> weight =
      Weight(tensors, kWTrain, kWQas, data.has_weight,
             pw_options.weight_param_id, depthwise.channels);
  pointwise.weight.train = weight.data;
  const core::TrainableParam<int32_t> bias =
      Bias(tensors, kBTrain, kBQas, data.bias_channels,
           pw_options.bias_param_id);
  core::ProjectionBackward projection;
  core::TrainableParam<int8_t> dw_weight;
  core::TrainableParam<int32_t> dw_bias;
  if (block != nullptr) {
    const schema::ConvGradOptions& opt = block->projection_options;
    const core::ConvGeometry& g = block->projection;
    projection.geometry = g;
    projection.mask =
        tensors.Mask(kProjY, block->has_proj_y, opt.act_min, opt.act_max);
    projection.dy = tensors.In<const float>(kDy);
    projection.weight = core::SplitWeight{
        tensors.In<const int8_t>(kProjW),
        tensors.In<const int8_t>(kProjWTrain,
                                 block->projection_train_channels > 0),
        block->projection_out_channels, g.kernel_h, g.kernel_w,
        opt.input_channels, block->projection_train_channels};
    projection.w_scale = tensors.In<const float>(kProjWScale);
    projection.x = tensors.In<const int8_t>(kDwX, block->has_dw_weight);
    dw_weight = Weight(tensors, kDwWTrain, kDwWQas, block->has_dw_weight,
                       block->depthwise_update.weight_param_id,
                       opt.input_channels);
    dw_bias = Bias(tensors, kDwBTrain, kDwBQas, block->depthwise_bias_channels,
                   block->depthwise_update.bias_param_id);
  }
  float* g = tensors.Out<float>(kG);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  const core::ChannelUpdate update(
      data.spec, StepOf(pw_updates, lr, pw_options, state), weight, bias);
  pointwise.update = pw_updates ? &update : nullptr;
  if (block == nullptr) {
    core::DepthwisePointwiseGrad(depthwise, pointwise, g);
    return Status::kOk;
  }
  const core::ChannelUpdate depthwise_update(
      DepthwiseSpec(data),
      StepOf(dw_updates, lr, block->depthwise_update, state), dw_weight,
      dw_bias);
  projection.update = dw_updates ? &depthwise_update : nullptr;
  core::DepthwisePointwiseGrad(depthwise, pointwise, g, &projection);
  return Status::kOk;
}

}  // namespace

const KernelOps& DepthwisePointwiseGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
