#include "core/split_conv.h"

namespace tflm_train {
namespace core {
namespace {

int32_t Accumulate(const QuantizedConvParams& params, const int8_t* x,
                   const SplitWeight& weight, int oh, int ow, int o) {
  const ConvGeometry& g = params.geometry;
  const int in = weight.in_channels;
  const int trained = weight.train != nullptr ? weight.train_channels : 0;
  // Unsigned, so the sum wraps like TFLM's int32 accumulator without UB; the
  // per-tap weight rows are hoisted so the channel loops are plain dot products.
  uint32_t acc = 0;
  for (int kh = 0; kh < g.kernel_h; ++kh) {
    const int ih = g.InputRow(oh, kh);
    if (ih < 0 || ih >= g.in_h) continue;
    for (int kw = 0; kw < g.kernel_w; ++kw) {
      const int iw = g.InputCol(ow, kw);
      if (iw < 0 || iw >= g.in_w) continue;
      const int8_t* pixel = x + (ih * g.in_w + iw) * in;
      const int tap = (o * g.kernel_h + kh) * g.kernel_w + kw;
      const int8_t* w_train = weight.train + tap * trained;
      const int8_t* w_full = weight.full + tap * in;
      int i = 0;
      for (; i < trained; ++i) {
        acc += static_cast<uint32_t>((pixel[i] - params.x_zero_point) * w_train[i]);
      }
      for (; i < in; ++i) {
        acc += static_cast<uint32_t>((pixel[i] - params.x_zero_point) * w_full[i]);
      }
    }
  }
  return static_cast<int32_t>(acc);
}

}  // namespace

void SplitConv(const QuantizedConvParams& params, const int8_t* x,
               const SplitWeight& weight, const int32_t* bias,
               const int32_t* multiplier, const int32_t* shift, int8_t* y) {
  const ConvGeometry& g = params.geometry;
  for (int oh = 0; oh < g.out_h; ++oh) {
    for (int ow = 0; ow < g.out_w; ++ow) {
      int8_t* out = y + (oh * g.out_w + ow) * weight.out_channels;
      for (int o = 0; o < weight.out_channels; ++o) {
        out[o] = params.Output(Accumulate(params, x, weight, oh, ow, o),
                               bias != nullptr ? bias[o] : 0, multiplier[o],
                               shift[o]);
      }
    }
  }
}

}  // namespace core
}  // namespace tflm_train
