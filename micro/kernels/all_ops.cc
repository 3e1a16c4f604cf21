// The table of every custom op the adapter registers (TrainingOps()). To add
// an op, append its KernelOps accessor (declared in kernels/ops.h).
#include "kernel_api.h"
#include "kernels/abi_canary.h"
#include "kernels/ops.h"

namespace tflm_train {

const KernelOps* TrainingOps(int* count) {
  static const KernelOps kOps[] = {
#ifdef TFLM_TRAIN_ABI_CANARY
      // Host builds only: the op the ABI canary test runs (tests/test_tflm_abi.py).
      AbiCanaryOp(),
#endif
      TrainInitOp(),
      SoftmaxXentOp(),
      ConvInputGradOp(),
      DepthwiseInputGradOp(),
      MeanGradOp(),
      ConvGradUpdateOp(),
      ConvWeightGradOp(),
      BiasGradOp(),
      SgdUpdateOp(),
      Conv2DSplitOp(),
      DepthwiseConvOp(),
      ActivationMaskOp(),
      ConvChainOp(),
      DepthwisePointwiseGradOp(),
  };
#ifdef TFLM_TRAIN_ABI_CANARY
  constexpr int kExtraOps = 1;
#else
  constexpr int kExtraOps = 0;
#endif
  static_assert(sizeof(kOps) / sizeof(kOps[0]) == kTrainingOpCount + kExtraOps,
                "update kTrainingOpCount (kernel_api.h) and the README's resolver size");
  *count = static_cast<int>(sizeof(kOps) / sizeof(kOps[0]));
  return kOps;
}

}  // namespace tflm_train
