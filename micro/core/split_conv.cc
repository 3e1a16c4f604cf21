#include "core/split_conv.h"

namespace tflm_train {
namespace core {
namespace {

int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  const int64_t product = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = product >= 0 ? (int64_t{1} << 30) : 1 - (int64_t{1} << 30);
  // Division (not a shift) truncates toward zero, as the reference does.
  return static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));
}

int32_t RoundingDivideByPowerOfTwo(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// int32 addition that wraps instead of being undefined on overflow.
int32_t WrappingAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) +
                              static_cast<uint32_t>(b));
}

int32_t Accumulate(const SplitConvParams& params, const int8_t* x,
                   const SplitWeight& weight, int oh, int ow, int o) {
  const ConvGeometry& g = params.geometry;
  int32_t acc = 0;
  for (int kh = 0; kh < g.kernel_h; ++kh) {
    const int ih = g.InputRow(oh, kh);
    if (ih < 0 || ih >= g.in_h) continue;
    for (int kw = 0; kw < g.kernel_w; ++kw) {
      const int iw = g.InputCol(ow, kw);
      if (iw < 0 || iw >= g.in_w) continue;
      const int8_t* pixel = x + (ih * g.in_w + iw) * weight.in_channels;
      for (int i = 0; i < weight.in_channels; ++i) {
        const int32_t centred = static_cast<int32_t>(pixel[i]) - params.x_zero_point;
        acc = WrappingAdd(acc, centred * weight.At(o, kh, kw, i));
      }
    }
  }
  return acc;
}

}  // namespace

int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  const int32_t shifted = static_cast<int32_t>(static_cast<uint32_t>(x)
                                               << left_shift);
  return RoundingDivideByPowerOfTwo(
      SaturatingRoundingDoublingHighMul(shifted, multiplier), right_shift);
}

void SplitConv(const SplitConvParams& params, const int8_t* x,
               const SplitWeight& weight, const int32_t* bias,
               const int32_t* multiplier, const int32_t* shift, int8_t* y) {
  const ConvGeometry& g = params.geometry;
  for (int oh = 0; oh < g.out_h; ++oh) {
    for (int ow = 0; ow < g.out_w; ++ow) {
      int8_t* out = y + (oh * g.out_w + ow) * weight.out_channels;
      for (int o = 0; o < weight.out_channels; ++o) {
        int32_t acc = Accumulate(params, x, weight, oh, ow, o);
        if (bias != nullptr) acc = WrappingAdd(acc, bias[o]);
        int32_t v = MultiplyByQuantizedMultiplier(acc, multiplier[o], shift[o]);
        v = WrappingAdd(v, params.y_zero_point);
        v = v < params.act_min ? params.act_min : v;
        v = v > params.act_max ? params.act_max : v;
        out[o] = static_cast<int8_t>(v);
      }
    }
  }
}

}  // namespace core
}  // namespace tflm_train
