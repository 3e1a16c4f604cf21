// TFLT_ABI_CANARY: a test-only op that proves the host build and the stock
// interpreter agree on every struct the adapter reads. It writes what it sees
// of its input into its int32 [kAbiCanaryOutputSize] output:
//   [rank, dims[0..kMaxRank) (0-padded), int(DType), options size in bytes]
// passing the record through a persistent buffer (Init) and a scratch buffer
// (Prepare/Eval), so every KernelContext service is exercised.
#ifndef TFLM_TRAIN_MICRO_KERNELS_ABI_CANARY_H_
#define TFLM_TRAIN_MICRO_KERNELS_ABI_CANARY_H_

#include "kernel_api.h"

namespace tflm_train {

constexpr int kAbiCanaryOutputSize = 1 + kMaxRank + 2;

const KernelOps& AbiCanaryOp();  // TFLT_ABI_CANARY

}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_KERNELS_ABI_CANARY_H_
