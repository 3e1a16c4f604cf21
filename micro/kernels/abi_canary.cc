#include "kernels/abi_canary.h"

#include <cstddef>
#include <cstdint>

namespace tflm_train {
namespace {

constexpr const char* kName = "TFLT_ABI_CANARY";

struct OpData {
  int32_t options_size;
  int scratch_index;
};

void* Init(KernelContext& ctx, const uint8_t* options, size_t options_size) {
  OpData* data = static_cast<OpData*>(ctx.AllocatePersistent(sizeof(OpData)));
  if (data == nullptr) {
    ctx.Report("%s: out of persistent arena memory", kName);
    return nullptr;
  }
  data->options_size = options == nullptr ? 0 : static_cast<int32_t>(options_size);
  data->scratch_index = -1;
  return data;
}

Status Prepare(KernelContext& ctx, void* op_data) {
  TensorView input, output;
  if (ctx.NumInputs() != 1 || ctx.NumOutputs() != 1 || !ctx.Input(0, &input) ||
      !ctx.Output(0, &output)) {
    ctx.Report("%s: expects one input and one output", kName);
    return Status::kError;
  }
  if (output.type != DType::kInt32 || output.NumElements() != kAbiCanaryOutputSize) {
    ctx.Report("%s: output must be int32 with %d elements", kName, kAbiCanaryOutputSize);
    return Status::kError;
  }
  OpData* data = static_cast<OpData*>(op_data);
  return ctx.RequestScratch(kAbiCanaryOutputSize * sizeof(int32_t), &data->scratch_index);
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData* data = static_cast<const OpData*>(op_data);
  TensorView input, output;
  int32_t* record = static_cast<int32_t*>(ctx.Scratch(data->scratch_index));
  if (!ctx.Input(0, &input) || !ctx.Output(0, &output) || record == nullptr ||
      output.data == nullptr) {
    ctx.Report("%s: tensors or scratch buffer missing at Eval", kName);
    return Status::kError;
  }
  record[0] = input.rank;
  for (int d = 0; d < kMaxRank; ++d) record[1 + d] = input.dims[d];
  record[1 + kMaxRank] = static_cast<int32_t>(input.type);
  record[2 + kMaxRank] = data->options_size;
  int32_t* out = output.As<int32_t>();
  for (int i = 0; i < kAbiCanaryOutputSize; ++i) out[i] = record[i];
  return Status::kOk;
}

}  // namespace

const KernelOps& AbiCanaryOp() {
  static constexpr KernelOps ops{kName, Init, Prepare, Eval};
  return ops;
}

}  // namespace tflm_train
