// C ABI over micro/core for tests/test_micro_core.py (loaded with ctypes).
// Conv geometry travels as int[12]: in_h, in_w, out_h, out_w, kernel_h,
// kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left.
#include <cstdint>
#include <vector>

#include "core/conv_chain.h"
#include "core/conv_geometry.h"
#include "core/conv_grad.h"
#include "core/conv_update.h"
#include "core/depthwise_conv.h"
#include "core/depthwise_grad.h"
#include "core/depthwise_pointwise_grad.h"
#include "core/mean_grad.h"
#include "core/sgd_update.h"
#include "core/softmax_xent.h"
#include "core/split_conv.h"
#include "core/train_init.h"

using namespace tflm_train::core;

namespace {

ConvGeometry Geometry(const int32_t* g) {
  ConvGeometry geometry;
  geometry.in_h = g[0];
  geometry.in_w = g[1];
  geometry.out_h = g[2];
  geometry.out_w = g[3];
  geometry.kernel_h = g[4];
  geometry.kernel_w = g[5];
  geometry.stride_h = g[6];
  geometry.stride_w = g[7];
  geometry.dilation_h = g[8];
  geometry.dilation_w = g[9];
  geometry.pad_top = g[10];
  geometry.pad_left = g[11];
  return geometry;
}

// spec: x_channels, train_channels, depthwise, depth_multiplier, x_zero_point
WeightGradSpec Spec(const int32_t* g, int out_channels, const int32_t* s,
                    float x_scale) {
  WeightGradSpec spec;
  spec.geometry = Geometry(g);
  spec.out_channels = out_channels;
  spec.x_channels = s[0];
  spec.train_channels = s[1];
  spec.depthwise = s[2] != 0;
  spec.depth_multiplier = s[3];
  spec.x_zero_point = s[4];
  spec.x_scale = x_scale;
  return spec;
}

// params: x_zero_point, y_zero_point, act_min, act_max
QuantizedConvParams Quantized(const int32_t* g, const int32_t* params) {
  QuantizedConvParams p;
  p.geometry = Geometry(g);
  p.x_zero_point = params[0];
  p.y_zero_point = params[1];
  p.act_min = params[2];
  p.act_max = params[3];
  return p;
}

// Per stage, int32[20]: depthwise, geometry[12], x_zero_point, y_zero_point,
// act_min, act_max, in_channels, out_channels, depth_multiplier; and four
// pointers: weight, bias (or null), multiplier, shift.
constexpr int kChainStageInts = 20;

std::vector<ConvChainStage> ChainStages(const int32_t* ints,
                                        const void* const* tensors,
                                        int count) {
  std::vector<ConvChainStage> stages(count);
  for (int i = 0; i < count; ++i) {
    const int32_t* s = ints + i * kChainStageInts;
    ConvChainStage& stage = stages[i];
    stage.depthwise = s[0] != 0;
    stage.conv = Quantized(s + 1, s + 13);
    stage.in_channels = s[17];
    stage.out_channels = s[18];
    stage.depth_multiplier = s[19];
    stage.weight = static_cast<const int8_t*>(tensors[4 * i]);
    stage.bias = static_cast<const int32_t*>(tensors[4 * i + 1]);
    stage.multiplier = static_cast<const int32_t*>(tensors[4 * i + 2]);
    stage.shift = static_cast<const int32_t*>(tensors[4 * i + 3]);
  }
  return stages;
}

Rounding RoundingOf(int rounding) {
  return rounding == 0 ? Rounding::kNearest : Rounding::kStochastic;
}

// y: the int8 activation or (packed) its TFLT_ACTIVATION_MASK bits.
ActivationMask MaskOf(const void* y, int packed, int32_t act_min,
                      int32_t act_max) {
  ActivationMask mask{nullptr, act_min, act_max};
  if (packed) {
    mask.bits = static_cast<const uint8_t*>(y);
  } else {
    mask.y = static_cast<const int8_t*>(y);
  }
  return mask;
}

}  // namespace

extern "C" {

const char* shim_check_geometry(const int32_t* g) {
  return CheckConvGeometry(Geometry(g));
}

uint32_t shim_hash32(uint32_t x) { return Hash32(x); }

void shim_exp_ref(const float* x, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = ExpRef(x[i]);
}

void shim_softmax_xent(const int8_t* logits, int classes, float scale,
                       int32_t zero_point, int label, float* loss,
                       float* dlogits) {
  SoftmaxXent(logits, classes, scale, zero_point, label, loss, dlogits);
}

void shim_conv_input_grad(const int32_t* g, const float* dy, const int8_t* y,
                          int32_t act_min, int32_t act_max, const int8_t* w,
                          const int8_t* w_train, int out_channels,
                          int in_channels, int train_channels,
                          const float* w_scale, float* dx) {
  const ConvGeometry geometry = Geometry(g);
  const SplitWeight weight{w, w_train, out_channels, geometry.kernel_h,
                           geometry.kernel_w, in_channels, train_channels};
  ConvInputGrad(geometry, ActivationMask{y, act_min, act_max}, dy, weight,
                w_scale, dx);
}

void shim_depthwise_input_grad(const int32_t* g, const float* dy,
                               const int8_t* y, int32_t act_min,
                               int32_t act_max, const int8_t* w,
                               const float* w_scale, int in_channels,
                               int depth_multiplier, float* dx) {
  DepthwiseInputGrad(Geometry(g), ActivationMask{y, act_min, act_max}, dy, w,
                     w_scale, in_channels, depth_multiplier, dx);
}

// dw_ints: geometry[12], channels, depth_multiplier, act_min, act_max, packed.
// pw_ints: geometry[12], act_min, act_max, packed, in_channels, train_channels,
// x_zero_point, rounding, step, weight_param_id, bias_param_id, bias_channels.
// proj_ints (null: not block mode): the projection's geometry[12], act_min,
// act_max, packed, out_channels, train_channels; the depthwise update's
// x_zero_point, rounding, weight_param_id, bias_param_id, bias_channels.
// t: dy, dw_y, dw_w, dw_w_scale, pw_y, pw_w, pw_w_scale, x, w_train, w_qas,
// b_train, b_qas, dx, g, then (block mode) proj_y, proj_w, proj_w_train,
// proj_w_scale, dw_x, dw_w_train, dw_w_qas, dw_b_train, dw_b_qas (absent ones
// null; no w_train and no b_train: no update).
void shim_depthwise_pointwise_grad(const int32_t* dw_ints,
                                   const int32_t* pw_ints,
                                   const int32_t* proj_ints, float x_scale,
                                   float dw_x_scale, float lr,
                                   void* const* t) {
  DepthwiseBackward depthwise;
  depthwise.geometry = Geometry(dw_ints);
  depthwise.channels = dw_ints[12];
  depthwise.depth_multiplier = dw_ints[13];
  depthwise.mask = MaskOf(t[1], dw_ints[16], dw_ints[14], dw_ints[15]);
  depthwise.dy = proj_ints == nullptr ? static_cast<const float*>(t[0]) : nullptr;
  depthwise.w = static_cast<const int8_t*>(t[2]);
  depthwise.w_scale = static_cast<const float*>(t[3]);
  const int channels = depthwise.channels;
  const int in_channels = pw_ints[15];
  const int train_channels = pw_ints[16];
  int8_t* w_train = static_cast<int8_t*>(t[8]);
  int32_t* b_train = static_cast<int32_t*>(t[10]);
  PointwiseBackward pointwise;
  pointwise.mask = MaskOf(t[4], pw_ints[14], pw_ints[12], pw_ints[13]);
  pointwise.geometry = Geometry(pw_ints);
  pointwise.weight = SplitWeight{static_cast<const int8_t*>(t[5]), w_train,
                                 channels, 1, 1, in_channels, train_channels};
  pointwise.w_scale = static_cast<const float*>(t[6]);
  pointwise.dx = static_cast<float*>(t[12]);
  pointwise.x = static_cast<const int8_t*>(t[7]);
  WeightGradSpec spec;
  spec.geometry = pointwise.geometry;
  spec.out_channels = channels;
  spec.x_channels = in_channels;
  spec.train_channels = train_channels;
  spec.x_zero_point = pw_ints[17];
  spec.x_scale = x_scale;
  const TrainableParam<int8_t> weight{w_train, static_cast<const float*>(t[9]),
                                      pw_ints[20], channels};
  const TrainableParam<int32_t> bias{b_train, static_cast<const float*>(t[11]),
                                     pw_ints[21], pw_ints[22]};
  const ChannelUpdate update(
      spec, TrainingStep{lr, RoundingOf(pw_ints[18]), pw_ints[19]}, weight,
      bias);
  if (w_train != nullptr || b_train != nullptr) pointwise.update = &update;
  float* g = static_cast<float*>(t[13]);
  if (proj_ints == nullptr) {
    DepthwisePointwiseGrad(depthwise, pointwise, g);
    return;
  }
  const int expanded = channels * depthwise.depth_multiplier;
  ProjectionBackward projection;
  projection.geometry = Geometry(proj_ints);
  projection.mask = MaskOf(t[14], proj_ints[14], proj_ints[12], proj_ints[13]);
  projection.dy = static_cast<const float*>(t[0]);
  projection.weight = SplitWeight{
      static_cast<const int8_t*>(t[15]), static_cast<const int8_t*>(t[16]),
      proj_ints[15], projection.geometry.kernel_h, projection.geometry.kernel_w,
      expanded, proj_ints[16]};
  projection.w_scale = static_cast<const float*>(t[17]);
  projection.x = static_cast<const int8_t*>(t[18]);
  int8_t* dw_w_train = static_cast<int8_t*>(t[19]);
  int32_t* dw_b_train = static_cast<int32_t*>(t[21]);
  WeightGradSpec dw_spec;
  dw_spec.geometry = depthwise.geometry;
  dw_spec.out_channels = expanded;
  dw_spec.x_channels = channels;
  dw_spec.train_channels = expanded;
  dw_spec.depthwise = true;
  dw_spec.depth_multiplier = depthwise.depth_multiplier;
  dw_spec.x_zero_point = proj_ints[17];
  dw_spec.x_scale = dw_x_scale;
  const TrainableParam<int8_t> dw_weight{
      dw_w_train, static_cast<const float*>(t[20]), proj_ints[19], expanded};
  const TrainableParam<int32_t> dw_bias{
      dw_b_train, static_cast<const float*>(t[22]), proj_ints[20],
      proj_ints[21]};
  const ChannelUpdate dw_update(
      dw_spec, TrainingStep{lr, RoundingOf(proj_ints[18]), pw_ints[19]},
      dw_weight, dw_bias);
  if (dw_w_train != nullptr || dw_b_train != nullptr) {
    projection.update = &dw_update;
  }
  DepthwisePointwiseGrad(depthwise, pointwise, g, &projection);
}

void shim_mean_grad(const float* dy, int height, int width, int channels,
                    float* dx) {
  MeanGrad(dy, height, width, channels, dx);
}

void shim_bias_grad(int positions, int out_channels, const float* dy,
                    const int8_t* y, int32_t act_min, int32_t act_max,
                    int bias_channels, float* db) {
  const ActivationMask mask{y, act_min, act_max};
  for (int o = 0; o < bias_channels; ++o) {
    db[o] = BiasGrad(positions, ChannelGradient{dy, mask, out_channels, o});
  }
}

void shim_conv_weight_grad(const int32_t* g, int out_channels,
                           const int32_t* spec_ints, float x_scale,
                           const float* dy, const int8_t* y, int32_t act_min,
                           int32_t act_max, const int8_t* x, float* dw) {
  const WeightGradSpec spec = Spec(g, out_channels, spec_ints, x_scale);
  const ActivationMask mask{y, act_min, act_max};
  for (int o = 0; o < out_channels; ++o) {
    ForEachWeightGrad(spec, ChannelGradient{dy, mask, out_channels, o}, x, o,
                      [dw](int element, float grad) { dw[element] = grad; });
  }
}

// step_ints: rounding, step, weight_param_id, bias_param_id, bias_channels
void shim_conv_grad_update(const int32_t* g, int out_channels,
                           const int32_t* spec_ints, float x_scale,
                           const float* dy, const int8_t* y, int32_t act_min,
                           int32_t act_max, const int8_t* x, float lr,
                           const int32_t* step_ints, int8_t* w_train,
                           const float* w_qas, int32_t* b_train,
                           const float* b_qas) {
  const WeightGradSpec spec = Spec(g, out_channels, spec_ints, x_scale);
  const TrainingStep step{lr, RoundingOf(step_ints[0]), step_ints[1]};
  TrainableParam<int8_t> weight;
  weight.data = w_train;
  weight.qas = w_qas;
  weight.param_id = step_ints[2];
  weight.channels = out_channels;
  TrainableParam<int32_t> bias;
  bias.data = b_train;
  bias.qas = b_qas;
  bias.param_id = step_ints[3];
  bias.channels = step_ints[4];
  ConvGradUpdate(spec, ActivationMask{y, act_min, act_max}, dy, x, step,
                 weight, bias);
}

void shim_sgd_update(const float* grad, void* param, int is_int8,
                     int elements, int channels, int inner, const float* qas,
                     float lr, int rounding, int32_t param_id, int32_t step) {
  const UpdateRule rule(lr, RoundingOf(rounding), param_id, step);
  ChannelAxis axis;
  axis.channels = channels;
  axis.inner = inner;
  if (is_int8) {
    SgdUpdate(rule, axis, grad, qas, elements, static_cast<int8_t*>(param));
  } else {
    SgdUpdate(rule, axis, grad, qas, elements, static_cast<int32_t*>(param));
  }
}

void shim_multiply_by_quantized_multiplier(const int32_t* x,
                                           const int32_t* multiplier,
                                           const int32_t* shift, int n,
                                           int32_t* out) {
  for (int i = 0; i < n; ++i) {
    out[i] = MultiplyByQuantizedMultiplier(x[i], multiplier[i], shift[i]);
  }
}

void shim_split_conv(const int32_t* g, const int32_t* params, const int8_t* x,
                     const int8_t* w, const int8_t* w_train, int out_channels,
                     int in_channels, int train_channels, const int32_t* bias,
                     const int32_t* multiplier, const int32_t* shift,
                     int8_t* y) {
  const QuantizedConvParams p = Quantized(g, params);
  const SplitWeight weight{w, w_train, out_channels, p.geometry.kernel_h,
                           p.geometry.kernel_w, in_channels, train_channels};
  SplitConv(p, x, weight, bias, multiplier, shift, y);
}

void shim_depthwise_conv(const int32_t* g, const int32_t* params,
                         const int8_t* x, const int8_t* w, int in_channels,
                         int depth_multiplier, const int32_t* bias,
                         const int32_t* multiplier, const int32_t* shift,
                         int8_t* y) {
  const DepthwiseConvParams p{Quantized(g, params), in_channels,
                              depth_multiplier};
  DepthwiseConv(p, x, w, bias, multiplier, shift, y);
}

size_t shim_conv_chain_scratch_bytes(const int32_t* stage_ints, int count) {
  const std::vector<const void*> none(4 * count, nullptr);
  return ConvChainScratchBytes(ChainStages(stage_ints, none.data(), count).data(),
                               count);
}

int64_t shim_conv_chain_in_place_offset(const int32_t* stage_ints, int count) {
  const std::vector<const void*> none(4 * count, nullptr);
  return ConvChainInPlaceOffset(
      ChainStages(stage_ints, none.data(), count).data(), count);
}

void shim_conv_chain(const int32_t* stage_ints, const void* const* tensors,
                     int count, const int8_t* x, int8_t* scratch, int8_t* y) {
  const std::vector<ConvChainStage> stages =
      ChainStages(stage_ints, tensors, count);
  std::vector<RowWindow> windows(count - 1);
  ConvChain(stages.data(), count, x, scratch, windows.data(), y);
}

void shim_copy_leading_channels(const void* src, void* dst, int rows,
                                int src_last, int dst_last, int element_size) {
  CopyLeadingChannels(src, dst, rows, src_last, dst_last,
                      static_cast<size_t>(element_size));
}

int32_t shim_next_step(int32_t step) { return NextStep(step); }

}  // extern "C"
