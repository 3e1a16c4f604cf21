// TFLT_ACTIVATION_MASK: a layer's fused-activation mask, packed for the
// backward ops so that the layer's int8 output need not live until then.
#include <cstdint>

#include "core/activation_mask.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_ACTIVATION_MASK";

struct OpData {
  schema::ActivationMaskOptions options;
  int count;  // elements of y
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadActivationMaskOptions,
                                          buffer, size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  kernels::Checker check(ctx, kName);
  TensorView y, mask;
  if (!check.Counts(1, 1, 1) || !check.Required(0, "y", &y) ||
      !check.Type(y, "y", DType::kInt8) ||
      !check.ActivationRange(data.options.act_min, data.options.act_max) ||
      !check.RequiredOutput(0, "mask", &mask)) {
    return false;
  }
  // The bound keeps PackedBytes' rounding within int.
  const int64_t count = y.NumElements();
  if (count < 1 || count > INT32_MAX - 7) {
    return check.Fail("y must have 1 to 2^31 - 8 elements");
  }
  data.count = static_cast<int>(count);
  return check.Vector(mask, "mask", DType::kUInt8,
                      core::ActivationMask::PackedBytes(data.count));
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int8_t* y = tensors.In<const int8_t>(0);
  uint8_t* mask = tensors.Out<uint8_t>(0);
  if (!tensors.ok()) return Status::kError;
  core::PackActivationMask(y, data.count, data.options.act_min,
                           data.options.act_max, mask);
  return Status::kOk;
}

}  // namespace

const KernelOps& ActivationMaskOp() {
  static constexpr KernelOps ops{kName, Init,
                                 kernels::PrepareWith<OpData, Validate>, Eval};
  return ops;
}

}  // namespace tflm_train
