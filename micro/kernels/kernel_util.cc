#include "kernels/kernel_util.h"

namespace tflm_train {
namespace kernels {
namespace {

const char* TypeName(DType type) {
  switch (type) {
    case DType::kFloat32:
      return "float32";
    case DType::kInt32:
      return "int32";
    case DType::kInt8:
      return "int8";
    case DType::kUInt8:
      return "uint8";
    case DType::kOther:
      break;
  }
  return "an unsupported type";
}

}  // namespace

bool Checker::Fail(const char* what) {
  ctx_.Report("%s: %s", op_, what);
  return false;
}

bool Checker::Counts(int min_inputs, int max_inputs, int outputs) {
  const int inputs = ctx_.NumInputs();
  if (inputs >= min_inputs && inputs <= max_inputs &&
      ctx_.NumOutputs() == outputs) {
    return true;
  }
  ctx_.Report("%s: expected %d to %d inputs and %d outputs, got %d and %d",
              op_, min_inputs, max_inputs, outputs, inputs, ctx_.NumOutputs());
  return false;
}

bool Checker::Required(int index, const char* name, TensorView* t) {
  if (ctx_.Input(index, t)) return true;
  ctx_.Report("%s: missing input %d (%s)", op_, index, name);
  return false;
}

bool Checker::RequiredOutput(int index, const char* name, TensorView* t) {
  if (ctx_.Output(index, t)) return true;
  ctx_.Report("%s: missing output %d (%s)", op_, index, name);
  return false;
}

bool Checker::Optional(int index, TensorView* t) {
  return ctx_.Input(index, t);
}

bool Checker::Type(const TensorView& t, const char* name, DType type) {
  if (t.type == type) return true;
  ctx_.Report("%s: %s must be %s, got %s", op_, name, TypeName(type),
              TypeName(t.type));
  return false;
}

bool Checker::Vector(const TensorView& t, const char* name, DType type, int n) {
  if (!Type(t, name, type)) return false;
  if (t.rank == 1 && t.dims[0] == n) return true;
  ctx_.Report("%s: %s must have shape [%d]", op_, name, n);
  return false;
}

bool Checker::SameDims(const TensorView& a, const char* a_name,
                       const TensorView& b, const char* b_name) {
  bool same = a.rank == b.rank;
  for (int i = 0; same && i < a.rank; ++i) same = a.dims[i] == b.dims[i];
  if (same) return true;
  ctx_.Report("%s: %s and %s must have the same shape", op_, a_name, b_name);
  return false;
}

bool Checker::AsImage(const TensorView& t, const char* name, DType type,
                      bool flatten, Image* image) {
  if (!Type(t, name, type)) return false;
  const bool batch1 = t.rank >= 1 && t.dims[0] == 1;
  if (batch1 && flatten) {
    *image = Image{1, 1, static_cast<int>(t.NumElements())};
    return true;
  }
  if (batch1 && t.rank == 4) {
    *image = Image{t.dims[1], t.dims[2], t.dims[3]};
    return true;
  }
  if (batch1 && t.rank == 2) {
    *image = Image{1, 1, t.dims[1]};
    return true;
  }
  ctx_.Report("%s: %s must be [1, H, W, C] or [1, C]", op_, name);
  return false;
}

bool Checker::ImageIs(const Image& image, const char* name,
                      const Image& expected) {
  if (image == expected) return true;
  ctx_.Report("%s: %s is [1, %d, %d, %d], expected [1, %d, %d, %d]", op_, name,
              image.h, image.w, image.c, expected.h, expected.w, expected.c);
  return false;
}

bool Checker::AsFilter(const TensorView& t, const char* name, DType type,
                       Filter* filter) {
  if (!Type(t, name, type)) return false;
  if (t.rank == 4) {
    *filter = Filter{t.dims[0], t.dims[1], t.dims[2], t.dims[3], false};
  } else if (t.rank == 2) {
    *filter = Filter{t.dims[0], 1, 1, t.dims[1], true};
  } else {
    ctx_.Report("%s: %s must be [O, kh, kw, I] or [O, I]", op_, name);
    return false;
  }
  if (filter->out >= 1 && filter->h >= 1 && filter->w >= 1 && filter->in >= 1) {
    return true;
  }
  ctx_.Report("%s: %s has an empty dimension", op_, name);
  return false;
}

bool Checker::TrainSlice(const TensorView& t, const char* name,
                         const Filter& filter, Filter* slice) {
  if (!AsFilter(t, name, DType::kInt8, slice)) return false;
  if (slice->fully_connected == filter.fully_connected &&
      slice->out == filter.out && slice->h == filter.h &&
      slice->w == filter.w && slice->in <= filter.in) {
    return true;
  }
  ctx_.Report("%s: %s must have w's shape with a last dim <= w's", op_, name);
  return false;
}

bool Checker::DepthwiseFilter(int index, int in_channels,
                              int depth_multiplier, Filter* filter) {
  TensorView w;
  if (!Required(index, "w", &w) || !AsFilter(w, "w", DType::kInt8, filter)) {
    return false;
  }
  if (filter->fully_connected || filter->out != 1) {
    return Fail("w must be [1, kh, kw, C*M]");
  }
  if (depth_multiplier < 1) return Fail("depth_multiplier must be >= 1");
  if (filter->in != in_channels * depth_multiplier) {
    return Fail("w's last dim must be input_channels * depth_multiplier");
  }
  return true;
}

bool Checker::Bias(int index, int channels, bool* has_bias) {
  TensorView bias;
  *has_bias = Optional(index, &bias);
  return !*has_bias || Vector(bias, "bias", DType::kInt32, channels);
}

bool Checker::Requantization(int multiplier_index, int shift_index,
                             int channels) {
  TensorView multiplier, shift;
  if (!Required(multiplier_index, "multiplier", &multiplier) ||
      !Vector(multiplier, "multiplier", DType::kInt32, channels) ||
      !HasData(multiplier, "multiplier") ||
      !Required(shift_index, "shift", &shift) ||
      !Vector(shift, "shift", DType::kInt32, channels) ||
      !HasData(shift, "shift")) {
    return false;
  }
  for (int o = 0; o < channels; ++o) {
    const int32_t m = multiplier.As<const int32_t>()[o];
    const int32_t s = shift.As<const int32_t>()[o];
    if (m < 0 || s < -31 || s > 30) {
      return Fail("multiplier must be >= 0 and shift in [-31, 30]");
    }
  }
  return true;
}

bool Checker::Int8Range(int32_t value, const char* name) {
  if (value >= -128 && value <= 127) return true;
  ctx_.Report("%s: %s %d is outside [-128, 127]", op_, name,
              static_cast<int>(value));
  return false;
}

bool Checker::ActivationRange(int32_t act_min, int32_t act_max) {
  if (!Int8Range(act_min, "act_min") || !Int8Range(act_max, "act_max")) {
    return false;
  }
  return act_min <= act_max || Fail("act_min must not exceed act_max");
}

bool Checker::Gradient(int dy_index, int y_index, int32_t act_min,
                       int32_t act_max, Image* dy_image, bool* has_y) {
  TensorView dy;
  return Required(dy_index, "dy", &dy) &&
         AsImage(dy, "dy", DType::kFloat32, false, dy_image) &&
         Mask(y_index, act_min, act_max, *dy_image, has_y);
}

bool Checker::Mask(int y_index, int32_t act_min, int32_t act_max,
                   const Image& image, bool* has_y) {
  TensorView y;
  if (!ActivationRange(act_min, act_max)) return false;
  *has_y = Optional(y_index, &y);
  if (!*has_y) return true;
  if (y.type == DType::kUInt8) {
    return Vector(y, "y (a packed mask)", DType::kUInt8,
                  core::ActivationMask::PackedBytes(image.h * image.w * image.c));
  }
  Image y_image;
  return AsImage(y, "y", DType::kInt8, false, &y_image) &&
         ImageIs(y_image, "y", image);
}

bool Checker::TrainablePair(int var_index, int qas_index, const char* qas_name,
                            int channels, TensorView* var, bool* present) {
  TensorView qas;
  *present = Optional(var_index, var);
  if (Optional(qas_index, &qas) != *present) {
    return Fail("a trainable variable and its qas go together");
  }
  return !*present || Vector(qas, qas_name, DType::kFloat32, channels);
}

bool Checker::Fraction(int index, const TensorView& weight, bool has_weight,
                       bool* present) {
  TensorView fraction;
  *present = Optional(index, &fraction);
  if (!*present) return true;
  if (!has_weight || weight.type != DType::kInt8) {
    return Fail("fractional bits need an int8 weight to update");
  }
  return Type(fraction, "fraction", DType::kInt8) &&
         SameDims(fraction, "fraction", weight, "the weight");
}

bool Checker::Geometry(const core::ConvGeometry& geometry) {
  const char* problem = core::CheckConvGeometry(geometry);
  if (problem == nullptr) return true;
  ctx_.Report("%s: inconsistent geometry (input %dx%d, output %dx%d, kernel "
              "%dx%d): %s", op_, geometry.in_h, geometry.in_w, geometry.out_h,
              geometry.out_w, geometry.kernel_h, geometry.kernel_w, problem);
  return false;
}

bool Checker::Label(int index, TensorView* t) {
  return Required(index, "label", t) && Vector(*t, "label", DType::kInt32, 1);
}

bool Checker::TrainingStep(int lr_index, int state_index) {
  TensorView lr, state;
  return Required(lr_index, "lr", &lr) &&
         Vector(lr, "lr", DType::kFloat32, 1) &&
         Required(state_index, "state", &state) &&
         Vector(state, "state", DType::kInt32, 2);
}

bool Checker::HasData(const TensorView& t, const char* name) {
  if (t.data != nullptr) return true;
  ctx_.Report("%s: %s must be a constant tensor", op_, name);
  return false;
}

core::ActivationMask EvalTensors::Mask(int index, bool present,
                                       int32_t act_min, int32_t act_max) {
  TensorView t;
  const bool found = ctx_.Input(index, &t);
  const void* data = Check(found, t.data, present, "input", index);
  core::ActivationMask mask{nullptr, act_min, act_max};
  if (t.type == DType::kUInt8) {
    mask.bits = static_cast<const uint8_t*>(data);
  } else {
    mask.y = static_cast<const int8_t*>(data);
  }
  return mask;
}

void* EvalTensors::Check(bool present, void* data, bool required,
                         const char* kind, int index) {
  if (!present && !required) return nullptr;
  if (present && data != nullptr) return data;
  if (ok_) ctx_.Report("%s: %s %d has no data", op_, kind, index);
  ok_ = false;
  return nullptr;
}

}  // namespace kernels
}  // namespace tflm_train
