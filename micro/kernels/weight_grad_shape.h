// Validation shared by TFLT_CONV_GRAD_UPDATE, TFLT_CONV_WEIGHT_GRAD and
// TFLT_DEPTHWISE_POINTWISE_GRAD: the trainable weight's shape (w_train, or dw)
// against dy, x and the options, and a fused update's operands.
#ifndef TFLM_TRAIN_MICRO_KERNELS_WEIGHT_GRAD_SHAPE_H_
#define TFLM_TRAIN_MICRO_KERNELS_WEIGHT_GRAD_SHAPE_H_

#include "core/conv_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"

namespace tflm_train {
namespace kernels {

// `weight` has `type` and is [O, kh, kw, K] / FC [O, K] with K <= x's
// channels, or (options.depthwise) [1, kh, kw, C*M] with x [1, H, W, C];
// O is dy's channel count. Fills all of `spec`.
bool ValidateWeightGrad(Checker& check,
                        const schema::ConvUpdateOptions& options,
                        const TensorView& weight, const char* weight_name,
                        DType type, const Image& dy_image, const TensorView& x,
                        core::WeightGradSpec* spec);

// The options' quantisation of x and activation range, and dy's geometry,
// as far as they matter without a weight (a bias-only update).
core::WeightGradSpec BiasOnlySpec(const schema::ConvUpdateOptions& options,
                                  const Image& dy_image);

// Input indices of a fused update's operands; w_fraction -1: the op takes no
// fractional bits.
struct UpdateInputs {
  int x, w_train, w_qas, b_train, b_qas;
  int w_fraction = -1;
};

// A fused update of a layer whose output gradient is `dy_image`: the optional
// (w_train, w_qas) pair with x (only a weight update reads it) and the
// optional (b_train, b_qas) pair, b_train int32 [Ob], 1 <= Ob <= O. Fills
// `spec` (BiasOnlySpec without a weight), *has_weight and *bias_channels
// (0: no bias update), and *has_fraction (the weight's optional fractional
// bits; see Checker::Fraction) when the op takes them.
bool ValidateUpdate(Checker& check, const schema::ConvUpdateOptions& options,
                    const UpdateInputs& inputs, const Image& dy_image,
                    core::WeightGradSpec* spec, bool* has_weight,
                    int* bias_channels, bool* has_fraction = nullptr);

}  // namespace kernels
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_KERNELS_WEIGHT_GRAD_SHAPE_H_
