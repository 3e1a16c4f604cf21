// TFLT_CONV_CHAIN: consecutive frozen int8 conv layers computed row by row
// (core/conv_chain.h), so their intermediate activations exist only as row
// windows in the op's scratch output, which TFLM plans for this op alone.
// The converter may place y over x (an offline-planned arena offset) where x
// dies here; Eval refuses an overlap that would overwrite rows still unread.
#include <cstdint>

#include "core/conv_chain.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_CONV_CHAIN";
constexpr int kStageInputs = 4;  // per stage, after x: w, bias, multiplier, shift
enum StageInput { kW, kBias, kMultiplier, kShift };
enum Output { kY, kScratch, kNumOutputs };

// Both allocations are whole multiples of the arena's 16-byte alignment, so
// they leave the persistent tail aligned for whatever TFLM allocates next.
struct alignas(16) OpData {
  schema::ConvChainOptions options;
  // [stages_count] layers, then [stages_count - 1] windows: one persistent
  // allocation sized by the options. The windows are Eval's working state.
  core::ConvChainStage* stages;
  core::RowWindow* windows;
  int64_t in_place_offset;  // core::ConvChainInPlaceOffset
  size_t x_bytes;
  size_t y_bytes;
};

// A stage's options; its input's shape and its tensors come at Prepare.
core::ConvChainStage StageOf(const schema::ConvChainStage& options) {
  core::ConvChainStage stage;
  stage.depthwise = options.depthwise;
  stage.conv = kernels::QuantizedConvOf(
      options, kernels::Image{},
      kernels::Image{options.output_height, options.output_width,
                     options.output_channels},
      kernels::Filter{});
  stage.out_channels = options.output_channels;
  stage.depth_multiplier = options.depth_multiplier;
  return stage;
}

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  OpData* data = static_cast<OpData*>(kernels::InitWithOptions<OpData>(
      ctx, kName, schema::ReadConvChainOptions, buffer, size));
  if (data == nullptr) return nullptr;
  const uint32_t count = data->options.stages_count;
  if (count < 2) return data;  // Prepare reports it
  const size_t bytes = count * sizeof(core::ConvChainStage) +
                       (count - 1) * sizeof(core::RowWindow);
  void* raw = ctx.AllocatePersistent((bytes + 15) / 16 * 16);
  if (raw == nullptr) {
    ctx.Report("%s: out of persistent arena memory for %u stages", kName,
               static_cast<unsigned>(count));
    return nullptr;
  }
  data->stages = static_cast<core::ConvChainStage*>(raw);
  data->windows = reinterpret_cast<core::RowWindow*>(data->stages + count);
  for (uint32_t i = 0; i < count; ++i) {
    schema::ConvChainStage options;
    if (!schema::ReadConvChainOptionsStages(buffer, size, i, &options)) {
      ctx.Report("%s: malformed custom options", kName);
      return nullptr;
    }
    data->stages[i] = StageOf(options);
  }
  return data;
}

// A constant input's data (Prepare sees constants' data), or null if absent.
template <typename T>
const T* ConstantData(KernelContext& ctx, int index) {
  TensorView t;
  return ctx.Input(index, &t) ? t.As<const T>() : nullptr;
}

// Stage `stage` reading `in`: its filter, output stage and geometry; on
// success `in` becomes its output's shape and the stage reads its constants.
bool PrepareStage(KernelContext& ctx, kernels::Checker& check, int base,
                  kernels::Image* in, core::ConvChainStage* stage) {
  TensorView w, bias;
  kernels::Filter filter;
  if (!check.Required(base + kW, "w", &w) || !check.HasData(w, "w")) {
    return false;
  }
  if (stage->depthwise) {
    if (!check.DepthwiseFilter(base + kW, in->c, stage->depth_multiplier,
                               &filter)) {
      return false;
    }
  } else if (!check.AsFilter(w, "w", DType::kInt8, &filter)) {
    return false;
  } else if (filter.fully_connected || filter.in != in->c) {
    return check.Fail("a conv stage's w must be [O, kh, kw, I] with I its "
                      "input's channels");
  }
  const int out_channels = stage->depthwise ? filter.in : filter.out;
  if (stage->out_channels != out_channels) {
    return check.Fail("output_channels must be w's output channels");
  }
  bool has_bias;
  if (!check.OutputStage(stage->conv, base + kBias, base + kMultiplier,
                         base + kShift, out_channels, &has_bias) ||
      (check.Optional(base + kBias, &bias) && !check.HasData(bias, "bias"))) {
    return false;
  }
  core::ConvGeometry& g = stage->conv.geometry;
  g.in_h = in->h;
  g.in_w = in->w;
  g.kernel_h = filter.h;
  g.kernel_w = filter.w;
  if (!check.Geometry(g)) return false;
  stage->in_channels = in->c;
  stage->weight = w.As<const int8_t>();
  stage->bias = has_bias ? bias.As<const int32_t>() : nullptr;
  stage->multiplier = ConstantData<int32_t>(ctx, base + kMultiplier);
  stage->shift = ConstantData<int32_t>(ctx, base + kShift);
  *in = kernels::Image{g.out_h, g.out_w, out_channels};
  return true;
}

size_t ImageBytes(const kernels::Image& image) {
  return static_cast<size_t>(image.h) * image.w * image.c;
}

bool Validate(KernelContext& ctx, OpData& data) {
  kernels::Checker check(ctx, kName);
  const int count = static_cast<int>(data.options.stages_count);
  if (count < 2) return check.Fail("a chain needs at least two stages");
  const int inputs = 1 + kStageInputs * count;
  TensorView x, y, scratch;
  kernels::Image image, y_image;
  if (!check.Counts(inputs, inputs, kNumOutputs) ||
      !check.Required(0, "x", &x) ||
      !check.AsImage(x, "x", DType::kInt8, false, &image)) {
    return false;
  }
  data.x_bytes = ImageBytes(image);
  for (int i = 0; i < count; ++i) {
    if (!PrepareStage(ctx, check, 1 + kStageInputs * i, &image,
                      &data.stages[i])) {
      ctx.Report("%s: (stage %d)", kName, i);
      return false;
    }
  }
  const size_t scratch_bytes = core::ConvChainScratchBytes(data.stages, count);
  data.in_place_offset = core::ConvChainInPlaceOffset(data.stages, count);
  data.y_bytes = ImageBytes(image);
  return check.RequiredOutput(kY, "y", &y) &&
         check.AsImage(y, "y", DType::kInt8, false, &y_image) &&
         check.ImageIs(y_image, "y", image) &&
         check.RequiredOutput(kScratch, "scratch", &scratch) &&
         check.Vector(scratch, "scratch", DType::kInt8,
                      static_cast<int>(scratch_bytes));
}

// Disjoint, or y starting at most in_place_offset bytes after x's start.
bool SafeOverlap(const OpData& data, const int8_t* x, const int8_t* y) {
  const uintptr_t xs = reinterpret_cast<uintptr_t>(x);
  const uintptr_t ys = reinterpret_cast<uintptr_t>(y);
  if (ys >= xs + data.x_bytes || xs >= ys + data.y_bytes) return true;
  const int64_t distance = ys >= xs ? static_cast<int64_t>(ys - xs)
                                    : -static_cast<int64_t>(xs - ys);
  return distance <= data.in_place_offset;
}

Status Eval(KernelContext& ctx, void* op_data) {
  OpData& data = *static_cast<OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int8_t* x = tensors.In<const int8_t>(0);
  int8_t* y = tensors.Out<int8_t>(kY);
  int8_t* scratch = tensors.Out<int8_t>(kScratch);
  if (!tensors.ok()) return Status::kError;
  if (!SafeOverlap(data, x, y)) {
    ctx.Report("%s: y overlaps x rows still to be read (it may start at "
               "most %d bytes after x)", kName,
               static_cast<int>(data.in_place_offset));
    return Status::kError;
  }
  core::ConvChain(data.stages, static_cast<int>(data.options.stages_count), x,
                  scratch, data.windows, y);
  return Status::kOk;
}

}  // namespace

const KernelOps& ConvChainOp() {
  static constexpr KernelOps ops{kName, Init,
                                 kernels::PrepareWith<OpData, Validate>, Eval};
  return ops;
}

}  // namespace tflm_train
