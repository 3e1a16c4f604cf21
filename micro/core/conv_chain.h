// Consecutive frozen int8 conv layers (TFLT_CONV_CHAIN) computed row by row:
// each layer's output but the last exists only as a window of the rows its
// consumer reads for one output row, so the intermediate activations never
// exist whole. Every row is computed once, bit-exact with running the layers
// one after the other (SplitConv / DepthwiseConv on a window of rows).
#ifndef TFLM_TRAIN_MICRO_CORE_CONV_CHAIN_H_
#define TFLM_TRAIN_MICRO_CORE_CONV_CHAIN_H_

#include <cstddef>
#include <cstdint>

#include "core/quantized_conv.h"

namespace tflm_train {
namespace core {

// One layer with its whole-image geometry (which must pass CheckConvGeometry):
// a per-channel conv, weight [O, kh, kw, I], or a depthwise conv, weight
// [1, kh, kw, C*M] (out_channels = in_channels * depth_multiplier).
struct ConvChainStage {
  bool depthwise = false;
  QuantizedConvParams conv;
  int in_channels = 1;
  int out_channels = 1;
  int depth_multiplier = 1;
  const int8_t* weight = nullptr;
  const int32_t* bias = nullptr;  // may be null
  const int32_t* multiplier = nullptr;
  const int32_t* shift = nullptr;
};

// Rows [first, first + count) of a stage's output, held at `rows` while
// ConvChain runs (its working state; the caller only provides the storage).
struct RowWindow {
  int8_t* rows = nullptr;
  int capacity = 0;
  int first = 0;
  int count = 0;
};

// Rows of stage i's output (i < count - 1) that stage i + 1 reads for one
// output row: its dilated kernel height, at most the image's height.
int ChainWindowRows(const ConvChainStage* stages, int i);

// Bytes of scratch ConvChain needs: each window, in stage order.
size_t ConvChainScratchBytes(const ConvChainStage* stages, int count);

// Largest distance in bytes from x's first byte to y's (negative: y starts
// before x) at which ConvChain may write y over x itself, x dead after the
// chain. An output row is written once every row it needs is computed; then
// x's rows before the first row any later output row reads are never read
// again, and rows pulled in order and each once make that row a function of
// the geometry alone, so output rows 0..r-1 must end before it, for every r.
// x's size when y has a single row. (kernels_grad/conv_chain.py's
// in_place_offset defines it.)
int64_t ConvChainInPlaceOffset(const ConvChainStage* stages, int count);

// y = stage count-1(... stage 0(x)), x [1, H, W, C] of stage 0's input and y
// [1, Ho, Wo, O] of the last stage's output; `scratch` holds
// ConvChainScratchBytes, `windows` count - 1 elements. y may overlap x only
// if it starts at most ConvChainInPlaceOffset bytes after x's start.
void ConvChain(const ConvChainStage* stages, int count, const int8_t* x,
               int8_t* scratch, RowWindow* windows, int8_t* y);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_CONV_CHAIN_H_
