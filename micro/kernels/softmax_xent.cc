// TFLT_SOFTMAX_XENT: cross-entropy loss and dlogits from int8 logits.
#include "core/softmax_xent.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_SOFTMAX_XENT";
enum Input { kLogits, kLabel, kNumInputs };
enum Output { kLoss, kDLogits, kNumOutputs };

struct OpData {
  schema::SoftmaxXentOptions options;
  int classes;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadSoftmaxXentOptions,
                                          buffer, size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  const schema::SoftmaxXentOptions& opt = data.options;
  kernels::Checker check(ctx, kName);
  TensorView logits, label, loss, dlogits;
  if (!check.Counts(kNumInputs, kNumInputs, kNumOutputs) ||
      !check.Required(kLogits, "logits", &logits) ||
      !check.Type(logits, "logits", DType::kInt8) ||
      !check.Label(kLabel, &label) ||
      !check.RequiredOutput(kLoss, "loss", &loss) ||
      !check.Vector(loss, "loss", DType::kFloat32, 1) ||
      !check.RequiredOutput(kDLogits, "dlogits", &dlogits) ||
      !check.Type(dlogits, "dlogits", DType::kFloat32) ||
      !check.SameDims(logits, "logits", dlogits, "dlogits") ||
      !check.Int8Range(opt.logits_zero_point, "logits_zero_point")) {
    return false;
  }
  // Also rejects NaN and infinity (inf * 0 would be NaN).
  if (!(opt.logits_scale > 0.0f && opt.logits_scale <= 3.40282347e38f)) {
    return check.Fail("logits_scale must be positive and finite");
  }
  data.classes = static_cast<int>(logits.NumElements());
  return data.classes >= 1 || check.Fail("logits must not be empty");
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int8_t* logits = tensors.In<const int8_t>(kLogits);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  float* loss = tensors.Out<float>(kLoss);
  float* dlogits = tensors.Out<float>(kDLogits);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) {
    loss[0] = 0.0f;
    return Status::kOk;
  }
  if (label[0] >= data.classes) {
    ctx.Report("%s: label %d is out of range for %d classes", kName,
               static_cast<int>(label[0]), data.classes);
    return Status::kError;
  }
  core::SoftmaxXent(logits, data.classes, data.options.logits_scale,
                    data.options.logits_zero_point, label[0], loss, dlogits);
  return Status::kOk;
}

}  // namespace

const KernelOps& SoftmaxXentOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
