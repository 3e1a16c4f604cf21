// TFLT_MEAN_GRAD: dx of a global average pool.
#include "core/mean_grad.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_MEAN_GRAD";
enum Input { kLabel, kDy, kNumInputs };

struct OpData {
  schema::MeanGradOptions options;
  int channels;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadMeanGradOptions, buffer,
                                          size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  kernels::Checker check(ctx, kName);
  TensorView label, dy, dx;
  kernels::Image dx_image;
  if (!check.Counts(kNumInputs, kNumInputs, 1) || !check.Label(kLabel, &label) ||
      !check.Required(kDy, "dy", &dy) ||
      !check.Type(dy, "dy", DType::kFloat32) ||
      !check.RequiredOutput(0, "dx", &dx) ||
      !check.AsImage(dx, "dx", DType::kFloat32, false, &dx_image)) {
    return false;
  }
  data.channels = static_cast<int>(dy.NumElements());
  if (data.options.input_height < 1 || data.options.input_width < 1 ||
      data.channels < 1) {
    return check.Fail("input_height, input_width and dy's size must be >= 1");
  }
  return check.ImageIs(dx_image, "dx",
                       kernels::Image{data.options.input_height,
                                      data.options.input_width, data.channels});
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* dy = tensors.In<const float>(kDy);
  float* dx = tensors.Out<float>(0);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  core::MeanGrad(dy, data.options.input_height, data.options.input_width,
                 data.channels, dx);
  return Status::kOk;
}

}  // namespace

const KernelOps& MeanGradOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
