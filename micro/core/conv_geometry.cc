#include "core/conv_geometry.h"

namespace tflm_train {
namespace core {
namespace {

const char* CheckAxis(int in, int out, int kernel, int stride, int dilation,
                      int pad) {
  if (in < 1 || out < 1 || kernel < 1) return "sizes must be positive";
  if (stride < 1 || dilation < 1) return "strides and dilations must be >= 1";
  if (pad < 0 || pad > (kernel - 1) * dilation) {
    return "padding must be in [0, (kernel - 1) * dilation]";
  }
  if ((out - 1) * stride - pad > in - 1) {
    return "output is larger than the input, strides and padding allow";
  }
  return nullptr;
}

}  // namespace

const char* CheckConvGeometry(const ConvGeometry& g) {
  const char* rows = CheckAxis(g.in_h, g.out_h, g.kernel_h, g.stride_h,
                               g.dilation_h, g.pad_top);
  if (rows != nullptr) return rows;
  return CheckAxis(g.in_w, g.out_w, g.kernel_w, g.stride_w, g.dilation_w,
                   g.pad_left);
}

}  // namespace core
}  // namespace tflm_train
