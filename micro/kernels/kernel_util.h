// Validation helpers shared by the training kernels' Prepare and Eval. Every
// check reports "<op>: <what is wrong>" through ctx.Report and returns false.
#ifndef TFLM_TRAIN_MICRO_KERNELS_KERNEL_UTIL_H_
#define TFLM_TRAIN_MICRO_KERNELS_KERNEL_UTIL_H_

#include <cstddef>
#include <cstdint>

#include "core/conv_geometry.h"
#include "core/quantized_conv.h"
#include "kernel_api.h"

namespace tflm_train {
namespace kernels {

// A batch-1 activation as an image: [1, H, W, C], or [1, C] as a 1x1 image.
struct Image {
  int h = 1, w = 1, c = 0;
  bool operator==(const Image& o) const {
    return h == o.h && w == o.w && c == o.c;
  }
};

// The four dims of a conv/FC weight; a rank-2 FC weight [O, I] is [O, 1, 1, I].
struct Filter {
  int out = 0, h = 1, w = 1, in = 0;
  bool fully_connected = false;
};

inline Status ToStatus(bool ok) { return ok ? Status::kOk : Status::kError; }

// Prepare of an op whose checks live in `Validate(ctx, op_data)`: every
// training op validates its tensors and fixes its sizes the same way.
template <typename OpData, bool (*Validate)(KernelContext&, OpData&)>
Status PrepareWith(KernelContext& ctx, void* op_data) {
  return ToStatus(Validate(ctx, *static_cast<OpData*>(op_data)));
}

// Allocates zero-initialised op data in the persistent arena.
template <typename OpData>
OpData* NewOpData(KernelContext& ctx, const char* op) {
  void* raw = ctx.AllocatePersistent(sizeof(OpData));
  if (raw == nullptr) {
    ctx.Report("%s: out of persistent arena memory", op);
    return nullptr;
  }
  OpData* data = static_cast<OpData*>(raw);
  *data = OpData{};
  return data;
}

// The spatial geometry of a conv-shaped op from its options (every options
// table with strides, dilations and pads names them alike).
template <typename Options>
core::ConvGeometry GeometryOf(const Options& options, const Image& input,
                              const Image& output, const Filter& filter) {
  core::ConvGeometry g;
  g.in_h = input.h;
  g.in_w = input.w;
  g.out_h = output.h;
  g.out_w = output.w;
  g.kernel_h = filter.h;
  g.kernel_w = filter.w;
  g.stride_h = options.stride_h;
  g.stride_w = options.stride_w;
  g.dilation_h = options.dilation_h;
  g.dilation_w = options.dilation_w;
  g.pad_top = options.pad_top;
  g.pad_left = options.pad_left;
  return g;
}

// The quantization of an int8 conv-like op from its options (x/y zero
// points and act_min/act_max named alike in every such table).
template <typename Options>
core::QuantizedConvParams QuantizedConvOf(const Options& options,
                                          const Image& input,
                                          const Image& output,
                                          const Filter& filter) {
  core::QuantizedConvParams params;
  params.geometry = GeometryOf(options, input, output, filter);
  params.x_zero_point = options.x_zero_point;
  params.y_zero_point = options.y_zero_point;
  params.act_min = options.act_min;
  params.act_max = options.act_max;
  return params;
}

// Init for an op whose data has an `options` member read by `read` (one of
// the generated schema::Read<Table> functions).
template <typename OpData, typename Options>
void* InitWithOptions(KernelContext& ctx, const char* op,
                      bool (*read)(const uint8_t*, size_t, Options*),
                      const uint8_t* buffer, size_t size) {
  OpData* data = NewOpData<OpData>(ctx, op);
  if (data == nullptr) return nullptr;
  if (!read(buffer, size, &data->options)) {
    ctx.Report("%s: malformed custom options", op);
    return nullptr;
  }
  return data;
}

class Checker {
 public:
  Checker(KernelContext& ctx, const char* op) : ctx_(ctx), op_(op) {}

  bool Fail(const char* what);
  // Trailing optional inputs may be omitted: min_inputs counts up to the
  // last required one.
  bool Counts(int min_inputs, int max_inputs, int outputs);
  // A present input / output (reports if absent).
  bool Required(int index, const char* name, TensorView* t);
  bool RequiredOutput(int index, const char* name, TensorView* t);
  // False if the optional input is absent (index -1 or beyond the inputs).
  bool Optional(int index, TensorView* t);

  bool Type(const TensorView& t, const char* name, DType type);
  // `type` with exactly the dims [n] (rank 1).
  bool Vector(const TensorView& t, const char* name, DType type, int n);
  bool SameDims(const TensorView& a, const char* a_name, const TensorView& b,
                const char* b_name);
  // `type`, batch 1, rank 4 or 2; `flatten` (FC input): any batch-1 shape as
  // a 1x1 image of all its elements.
  bool AsImage(const TensorView& t, const char* name, DType type, bool flatten,
               Image* image);
  bool ImageIs(const Image& image, const char* name, const Image& expected);
  // `type`, rank 4 [O, kh, kw, I] or (FC) rank 2 [O, I], no empty dim.
  bool AsFilter(const TensorView& t, const char* name, DType type,
                Filter* filter);
  // A split weight's trainable part: `filter`'s shape with a last dim <= its.
  bool TrainSlice(const TensorView& t, const char* name, const Filter& filter,
                  Filter* slice);
  // A depthwise weight [1, kh, kw, in_channels * depth_multiplier] (int8).
  bool DepthwiseFilter(int index, int in_channels, int depth_multiplier,
                       Filter* filter);
  // The int8 output stage of a conv-like op with `channels` output channels:
  // the options' zero points and activation range, the optional int32 bias
  // and the constant per-channel multiplier/shift (only defined for
  // multiplier >= 0 and shift in [-31, 30]).
  template <typename Options>
  bool OutputStage(const Options& options, int bias_index,
                   int multiplier_index, int shift_index, int channels,
                   bool* has_bias) {
    return Int8Range(options.x_zero_point, "x_zero_point") &&
           Int8Range(options.y_zero_point, "y_zero_point") &&
           ActivationRange(options.act_min, options.act_max) &&
           Bias(bias_index, channels, has_bias) &&
           Requantization(multiplier_index, shift_index, channels);
  }
  bool Int8Range(int32_t value, const char* name);
  bool ActivationRange(int32_t act_min, int32_t act_max);
  // An incoming gradient dy (float32 image) and its optional activation
  // mask y (see Mask).
  bool Gradient(int dy_index, int y_index, int32_t act_min, int32_t act_max,
                Image* dy_image, bool* has_y);
  // The optional activation mask y of a gradient shaped `image`: the forward
  // output (int8, that image) or its TFLT_ACTIVATION_MASK (uint8
  // [ceil(elements / 8)]); act_min/act_max must be a valid range either way.
  bool Mask(int y_index, int32_t act_min, int32_t act_max, const Image& image,
            bool* has_y);
  // A trainable's optional (variable, qas) pair: both or neither; qas is
  // float32 [channels].
  bool TrainablePair(int var_index, int qas_index, const char* qas_name,
                     int channels, TensorView* var, bool* present);
  // A weight's optional fractional bits: int8, the shape of `weight`, which
  // must be present (has_weight) and int8.
  bool Fraction(int index, const TensorView& weight, bool has_weight,
                bool* present);
  bool Geometry(const core::ConvGeometry& geometry);
  // The standard label / lr / state inputs.
  bool Label(int index, TensorView* t);
  bool TrainingStep(int lr_index, int state_index);
  // A tensor whose data Prepare needs (a constant).
  bool HasData(const TensorView& t, const char* name);

 private:
  bool Bias(int index, int channels, bool* has_bias);
  bool Requantization(int multiplier_index, int shift_index, int channels);

  KernelContext& ctx_;
  const char* op_;
};

// Eval: the data pointers of a node's tensors. A required tensor without
// data (absent, or not placed) is reported once and makes ok() false.
class EvalTensors {
 public:
  EvalTensors(KernelContext& ctx, const char* op) : ctx_(ctx), op_(op) {}

  // `required` false: null if the input is absent.
  template <typename T>
  T* In(int index, bool required = true) {
    TensorView t;
    const bool present = ctx_.Input(index, &t);
    return static_cast<T*>(Check(present, t.data, required, "input", index));
  }
  template <typename T>
  T* Out(int index) {
    TensorView t;
    const bool present = ctx_.Output(index, &t);
    return static_cast<T*>(Check(present, t.data, true, "output", index));
  }
  // The activation mask of the y input Checker::Gradient accepted (int8
  // values or packed bits); `present` as Gradient's has_y.
  core::ActivationMask Mask(int index, bool present, int32_t act_min,
                            int32_t act_max);
  bool ok() const { return ok_; }

 private:
  void* Check(bool present, void* data, bool required, const char* kind,
              int index);

  KernelContext& ctx_;
  const char* op_;
  bool ok_ = true;
};

}  // namespace kernels
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_KERNELS_KERNEL_UTIL_H_
