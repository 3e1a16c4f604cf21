// Spatial geometry shared by the convolution-shaped training ops.
#ifndef TFLM_TRAIN_MICRO_CORE_CONV_GEOMETRY_H_
#define TFLM_TRAIN_MICRO_CORE_CONV_GEOMETRY_H_

#include <cstdint>

namespace tflm_train {
namespace core {

// Batch-1 NHWC convolution with explicit padding. Input position of output
// row `oh` and kernel row `kh`: oh*stride_h - pad_top + kh*dilation_h (same for
// columns); positions outside the input contribute nothing.
struct ConvGeometry {
  int in_h = 1, in_w = 1;
  int out_h = 1, out_w = 1;
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  int pad_top = 0, pad_left = 0;

  int InputRow(int oh, int kh) const {
    return oh * stride_h - pad_top + kh * dilation_h;
  }
  int InputCol(int ow, int kw) const {
    return ow * stride_w - pad_left + kw * dilation_w;
  }
  // The kernel rows [*first, *last) whose input row for output row `oh` is
  // inside the input: a bounds check per window instead of one per tap.
  void RowsInside(int oh, int* first, int* last) const {
    TapsInside(oh * stride_h - pad_top, kernel_h, dilation_h, in_h, first, last);
  }
  void ColsInside(int ow, int* first, int* last) const {
    TapsInside(ow * stride_w - pad_left, kernel_w, dilation_w, in_w, first,
               last);
  }
  // The output row whose window puts kernel row `kh` on input row `ih`;
  // false if there is none (not an exact multiple of the stride, or outside).
  bool OutputRow(int ih, int kh, int* oh) const {
    return InverseTap(ih + pad_top - kh * dilation_h, stride_h, out_h, oh);
  }
  bool OutputCol(int iw, int kw, int* ow) const {
    return InverseTap(iw + pad_left - kw * dilation_w, stride_w, out_w, ow);
  }
  // Calls visit(kh, kw, output position oh*out_w + ow) for every tap whose
  // window puts it on input (ih, iw), kernel rows then columns: the order the
  // input-gradient references sum in.
  template <typename Visit>
  void ForEachTapOn(int ih, int iw, Visit&& visit) const {
    for (int kh = 0; kh < kernel_h; ++kh) {
      int oh;
      if (!OutputRow(ih, kh, &oh)) continue;
      for (int kw = 0; kw < kernel_w; ++kw) {
        int ow;
        if (OutputCol(iw, kw, &ow)) visit(kh, kw, oh * out_w + ow);
      }
    }
  }

 private:
  // Taps k with 0 <= origin + k*dilation < in.
  static void TapsInside(int origin, int kernel, int dilation, int in,
                         int* first, int* last) {
    *first = origin >= 0 ? 0 : (dilation - 1 - origin) / dilation;
    const int past = origin >= in ? 0 : (in - 1 - origin) / dilation + 1;
    *last = past < kernel ? past : kernel;
  }
  static bool InverseTap(int offset, int stride, int extent, int* out) {
    if (offset < 0 || offset % stride != 0) return false;
    *out = offset / stride;
    return *out < extent;
  }
};

// Null if `g` is a geometry some SAME/VALID convolution can have (positive
// sizes, strides and dilations; padding within the dilated kernel; every
// output window starting inside the input); otherwise what is wrong.
const char* CheckConvGeometry(const ConvGeometry& g);

// Straight-through estimator of a fused ReLU/ReLU6: the gradient passes only
// where the forward int8 output `y` was strictly inside (act_min, act_max).
// TFLT_ACTIVATION_MASK saves that test as `bits` (element i: bit i % 8 of
// byte i / 8), so the backward need not keep `y` alive; `bits` replaces `y`.
// With neither (no fused activation) the gradient always passes.
struct ActivationMask {
  const int8_t* y = nullptr;
  int32_t act_min = -128;
  int32_t act_max = 127;
  const uint8_t* bits = nullptr;

  static int PackedBytes(int count) { return (count + 7) / 8; }

  bool Passes(int index) const {
    if (bits != nullptr) return ((bits[index >> 3] >> (index & 7)) & 1) != 0;
    if (y == nullptr) return true;
    const int32_t v = y[index];
    return act_min < v && v < act_max;
  }
  float Apply(float dy, int index) const { return Passes(index) ? dy : 0.0f; }
};

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_CONV_GEOMETRY_H_
