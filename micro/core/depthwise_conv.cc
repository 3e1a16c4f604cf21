#include "core/depthwise_conv.h"

namespace tflm_train {
namespace core {
namespace {

// Accumulators live on the stack (no arena scratch, no Prepare-time size);
// a window's taps are visited once per block of this many output channels,
// so wide layers stay as fast as narrow ones. 256 bytes of stack.
constexpr int kBlock = 64;

// acc[j] += (pixel[(first + j) / M] - x_zero_point) * tap[j] for j < n: one
// kernel tap over n output channels contiguous in memory.
void AccumulateTap(const int8_t* pixel, const int8_t* tap, int first, int n,
                   int depth_multiplier, int32_t x_zero_point, int32_t* acc) {
  if (depth_multiplier == 1) {
    pixel += first;
    for (int j = 0; j < n; ++j) {
      acc[j] = WrappingAdd(acc[j], (pixel[j] - x_zero_point) * tap[j]);
    }
    return;
  }
  for (int c = first / depth_multiplier, j = 0; j < n; ++c) {
    const int32_t centred = pixel[c] - x_zero_point;
    const int past = (c + 1) * depth_multiplier - first;
    for (const int end = past < n ? past : n; j < end; ++j) {
      acc[j] = WrappingAdd(acc[j], centred * tap[j]);
    }
  }
}

}  // namespace

void DepthwiseConv(const DepthwiseConvParams& params, const int8_t* x,
                   const int8_t* w, const int32_t* bias,
                   const int32_t* multiplier, const int32_t* shift, int8_t* y) {
  const QuantizedConvParams& q = params.conv;
  const ConvGeometry& g = q.geometry;
  const int channels = params.in_channels * params.depth_multiplier;
  int32_t acc[kBlock];
  for (int oh = 0; oh < g.out_h; ++oh) {
    int kh_first, kh_last;
    g.RowsInside(oh, &kh_first, &kh_last);
    for (int ow = 0; ow < g.out_w; ++ow) {
      int kw_first, kw_last;
      g.ColsInside(ow, &kw_first, &kw_last);
      int8_t* out = y + (oh * g.out_w + ow) * channels;
      for (int first = 0; first < channels; first += kBlock) {
        const int n = channels - first < kBlock ? channels - first : kBlock;
        for (int j = 0; j < n; ++j) acc[j] = 0;
        for (int kh = kh_first; kh < kh_last; ++kh) {
          const int8_t* row = x + g.InputRow(oh, kh) * g.in_w * params.in_channels;
          for (int kw = kw_first; kw < kw_last; ++kw) {
            AccumulateTap(row + g.InputCol(ow, kw) * params.in_channels,
                          w + (kh * g.kernel_w + kw) * channels + first, first,
                          n, params.depth_multiplier, q.x_zero_point, acc);
          }
        }
        for (int j = 0; j < n; ++j) {
          const int o = first + j;
          out[o] = q.Output(acc[j], bias != nullptr ? bias[o] : 0,
                            multiplier[o], shift[o]);
        }
      }
    }
  }
}

}  // namespace core
}  // namespace tflm_train
