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

}  // namespace kernels
}  // namespace tflm_train
