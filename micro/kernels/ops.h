// The training ops' kernels, one per file in micro/kernels/.
#ifndef TFLM_TRAIN_MICRO_KERNELS_OPS_H_
#define TFLM_TRAIN_MICRO_KERNELS_OPS_H_

#include "kernel_api.h"

namespace tflm_train {

const KernelOps& TrainInitOp();              // TFLT_TRAIN_INIT
const KernelOps& SoftmaxXentOp();            // TFLT_SOFTMAX_XENT
const KernelOps& ConvInputGradOp();          // TFLT_CONV_INPUT_GRAD
const KernelOps& DepthwiseInputGradOp();     // TFLT_DEPTHWISE_INPUT_GRAD
const KernelOps& MeanGradOp();               // TFLT_MEAN_GRAD
const KernelOps& ConvGradUpdateOp();         // TFLT_CONV_GRAD_UPDATE
const KernelOps& ConvWeightGradOp();         // TFLT_CONV_WEIGHT_GRAD
const KernelOps& BiasGradOp();               // TFLT_BIAS_GRAD
const KernelOps& SgdUpdateOp();              // TFLT_SGD_UPDATE
const KernelOps& Conv2DSplitOp();            // TFLT_CONV_2D_SPLIT
const KernelOps& DepthwiseConvOp();          // TFLT_DEPTHWISE_CONV_2D
const KernelOps& ActivationMaskOp();         // TFLT_ACTIVATION_MASK
const KernelOps& ConvChainOp();              // TFLT_CONV_CHAIN
const KernelOps& DepthwisePointwiseGradOp(); // TFLT_DEPTHWISE_POINTWISE_GRAD

}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_KERNELS_OPS_H_
