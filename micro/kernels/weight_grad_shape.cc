#include "kernels/weight_grad_shape.h"

namespace tflm_train {
namespace kernels {

core::WeightGradSpec BiasOnlySpec(const schema::ConvUpdateOptions& options,
                                  const Image& dy_image) {
  core::WeightGradSpec spec;
  spec.geometry.out_h = dy_image.h;
  spec.geometry.out_w = dy_image.w;
  spec.out_channels = dy_image.c;
  spec.x_zero_point = options.x_zero_point;
  spec.x_scale = options.x_scale;
  return spec;
}

bool ValidateWeightGrad(Checker& check,
                        const schema::ConvUpdateOptions& options,
                        const TensorView& weight, const char* weight_name,
                        DType type, const Image& dy_image, const TensorView& x,
                        core::WeightGradSpec* spec) {
  Filter filter;
  Image x_image;
  if (!check.AsFilter(weight, weight_name, type, &filter) ||
      !check.AsImage(x, "x", DType::kInt8, filter.fully_connected, &x_image) ||
      !check.Int8Range(options.x_zero_point, "x_zero_point")) {
    return false;
  }
  *spec = BiasOnlySpec(options, dy_image);
  spec->x_channels = x_image.c;
  spec->train_channels = filter.in;
  if (options.depthwise) {
    if (filter.fully_connected || filter.out != 1 || filter.in != dy_image.c) {
      return check.Fail("a depthwise weight must be [1, kh, kw, O], O = dy's channels");
    }
    if (options.depth_multiplier < 1 ||
        x_image.c * options.depth_multiplier != dy_image.c) {
      return check.Fail("dy's channels must be x's channels * depth_multiplier");
    }
    spec->depthwise = true;
    spec->depth_multiplier = options.depth_multiplier;
  } else if (filter.out != dy_image.c || filter.in > x_image.c) {
    return check.Fail("the weight must be [O, kh, kw, K], O = dy's channels, K <= x's");
  }
  spec->geometry = GeometryOf(options, x_image, dy_image, filter);
  return check.Geometry(spec->geometry);
}

bool ValidateUpdate(Checker& check, const schema::ConvUpdateOptions& options,
                    const UpdateInputs& inputs, const Image& dy_image,
                    core::WeightGradSpec* spec, bool* has_weight,
                    int* bias_channels, bool* has_fraction) {
  TensorView x, w_train, b_train;
  bool has_bias, fraction;
  if (!check.TrainablePair(inputs.w_train, inputs.w_qas, "w_qas", dy_image.c,
                           &w_train, has_weight) ||
      (*has_weight && (!check.Required(inputs.x, "x", &x) ||
                       !check.Type(x, "x", DType::kInt8))) ||
      !check.TrainablePair(inputs.b_train, inputs.b_qas, "b_qas", dy_image.c,
                           &b_train, &has_bias)) {
    return false;
  }
  *spec = BiasOnlySpec(options, dy_image);
  if ((*has_weight && !ValidateWeightGrad(check, options, w_train, "w_train",
                                          DType::kInt8, dy_image, x, spec)) ||
      !check.Fraction(inputs.w_fraction, w_train, *has_weight, &fraction)) {
    return false;
  }
  if (has_fraction != nullptr) *has_fraction = fraction;
  *bias_channels = 0;
  if (!has_bias) return true;
  if (!check.Type(b_train, "b_train", DType::kInt32)) return false;
  if (b_train.rank != 1 || b_train.dims[0] < 1 || b_train.dims[0] > dy_image.c) {
    return check.Fail("b_train must be [Ob] with 1 <= Ob <= dy's channels");
  }
  *bias_channels = b_train.dims[0];
  return true;
}

}  // namespace kernels
}  // namespace tflm_train
