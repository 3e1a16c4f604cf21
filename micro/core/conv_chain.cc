#include "core/conv_chain.h"

#include <cstring>

#include "core/depthwise_conv.h"
#include "core/split_conv.h"

namespace tflm_train {
namespace core {
namespace {

int OutputRowBytes(const ConvChainStage& stage) {
  return stage.conv.geometry.out_w * stage.out_channels;
}

// The input rows [*first, *last) under output row `oh`'s window, clipped to
// the image: never empty in a valid geometry, and moving only forward as oh
// grows (unlike the rows its taps hit, which a dilation larger than the
// stride makes jump back).
void InputRows(const ConvGeometry& g, int oh, int* first, int* last) {
  const int origin = g.InputRow(oh, 0);
  const int end = origin + (g.kernel_h - 1) * g.dilation_h + 1;
  *first = origin > 0 ? origin : 0;
  *last = end < g.in_h ? end : g.in_h;
}

// Output row `oh` of `stage` from its input rows [first, last) at `in`: the
// same layer on those rows alone (input row ih is row ih - first there, which
// the shifted padding accounts for).
void StageRow(const ConvChainStage& stage, int oh, int first, int last,
              const int8_t* in, int8_t* out) {
  QuantizedConvParams rows = stage.conv;
  rows.geometry.in_h = last - first;
  rows.geometry.out_h = 1;
  rows.geometry.pad_top = stage.conv.geometry.pad_top + first -
                          oh * stage.conv.geometry.stride_h;
  if (stage.depthwise) {
    const DepthwiseConvParams params{rows, stage.in_channels,
                                     stage.depth_multiplier};
    DepthwiseConv(params, in, stage.weight, stage.bias, stage.multiplier,
                  stage.shift, out);
    return;
  }
  const SplitWeight weight{stage.weight, nullptr, stage.out_channels,
                           rows.geometry.kernel_h, rows.geometry.kernel_w,
                           stage.in_channels, 0};
  SplitConv(rows, in, weight, stage.bias, stage.multiplier, stage.shift, out);
}

// Before stage i's producer computes more rows for it: the window forgets
// what lies before `first` when nothing held is needed, or when it is full
// (it holds at least the rows one output row reads, so this frees a row).
void MakeRoom(RowWindow& window, int first, int row_bytes) {
  if (first >= window.first + window.count) {
    window.first = first;
    window.count = 0;
  } else if (window.count == window.capacity) {
    const int dropped = first - window.first;
    window.count -= dropped;
    std::memmove(window.rows, window.rows + dropped * row_bytes,
                 static_cast<size_t>(window.count) * row_bytes);
    window.first = first;
  }
}

// Output row `oh` of stage `top` to `out`, pulling the rows it reads through
// the stages below: a stage whose input rows are not all resident has its
// producer compute the next one, then looks again. Iterative, so the stack
// does not grow with the chain's length; a consumer's rows only move forward,
// so every row is computed once.
void PullRow(const ConvChainStage* stages, RowWindow* windows,
             const int8_t* x, int top, int oh, int8_t* out) {
  int i = top;
  for (;;) {
    const ConvChainStage& stage = stages[i];
    const int row = i == top ? oh : windows[i].first + windows[i].count;
    int first, last;
    InputRows(stage.conv.geometry, row, &first, &last);
    const int8_t* in = x + first * stage.conv.geometry.in_w * stage.in_channels;
    if (i > 0) {
      RowWindow& input = windows[i - 1];
      const int row_bytes = OutputRowBytes(stages[i - 1]);
      if (input.first + input.count < last) {
        MakeRoom(input, first, row_bytes);
        --i;
        continue;
      }
      in = input.rows + (first - input.first) * row_bytes;
    }
    if (i == top) {
      StageRow(stage, row, first, last, in, out);
      return;
    }
    RowWindow& window = windows[i];
    StageRow(stage, row, first, last, in,
             window.rows + window.count * OutputRowBytes(stage));
    ++window.count;
    ++i;
  }
}

}  // namespace

int ChainWindowRows(const ConvChainStage* stages, int i) {
  const ConvGeometry& consumer = stages[i + 1].conv.geometry;
  const int rows = (consumer.kernel_h - 1) * consumer.dilation_h + 1;
  const int height = stages[i].conv.geometry.out_h;
  return rows < height ? rows : height;
}

size_t ConvChainScratchBytes(const ConvChainStage* stages, int count) {
  size_t bytes = 0;
  for (int i = 0; i + 1 < count; ++i) {
    bytes += static_cast<size_t>(ChainWindowRows(stages, i)) *
             OutputRowBytes(stages[i]);
  }
  return bytes;
}

int64_t ConvChainInPlaceOffset(const ConvChainStage* stages, int count) {
  const int64_t in_row_bytes =
      static_cast<int64_t>(stages[0].conv.geometry.in_w) *
      stages[0].in_channels;
  const ConvChainStage& last = stages[count - 1];
  const int64_t out_row_bytes = OutputRowBytes(last);
  int64_t offset = in_row_bytes * stages[0].conv.geometry.in_h;
  for (int r = 1; r < last.conv.geometry.out_h; ++r) {
    // The first row of x that output rows r, r + 1, ... read.
    int row = r;
    for (int i = count - 1; i >= 0; --i) {
      row = stages[i].conv.geometry.InputRow(row, 0);
      if (row < 0) row = 0;
    }
    const int64_t room = row * in_row_bytes - r * out_row_bytes;
    if (room < offset) offset = room;
  }
  return offset;
}

void ConvChain(const ConvChainStage* stages, int count, const int8_t* x,
               int8_t* scratch, RowWindow* windows, int8_t* y) {
  for (int i = 0; i + 1 < count; ++i) {
    windows[i] = RowWindow{scratch, ChainWindowRows(stages, i), 0, 0};
    scratch += windows[i].capacity * OutputRowBytes(stages[i]);
  }
  const ConvChainStage& last = stages[count - 1];
  for (int oh = 0; oh < last.conv.geometry.out_h; ++oh) {
    PullRow(stages, windows, x, count - 1, oh, y + oh * OutputRowBytes(last));
  }
}

}  // namespace core
}  // namespace tflm_train
