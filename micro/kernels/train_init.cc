// TFLT_TRAIN_INIT: seeds the trainable variables from flash on the first
// invocation and counts training steps.
#include "core/train_init.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_TRAIN_INIT";
enum Input { kLabel, kState, kFirstPair };

struct OpData {
  schema::TrainInitOptions options;
};

size_t ElementSize(DType type) {
  switch (type) {
    case DType::kInt8:
      return 1;
    case DType::kInt32:
    case DType::kFloat32:
      return 4;
    case DType::kUInt8:
    case DType::kOther:
      break;
  }
  return 0;
}

// Rows (all dims but the last) and the last dim of a pair's tensor.
void RowsAndLast(const TensorView& t, int* rows, int* last) {
  *last = t.dims[t.rank - 1];
  *rows = 1;
  for (int i = 0; i + 1 < t.rank; ++i) *rows *= t.dims[i];
}

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadTrainInitOptions, buffer,
                                          size);
}

bool ValidatePair(KernelContext& ctx, int src_index) {
  kernels::Checker check(ctx, kName);
  TensorView src, dst;
  if (!check.Required(src_index, "src", &src) ||
      !check.Required(src_index + 1, "dst", &dst) ||
      !check.HasData(src, "src")) {
    return false;
  }
  bool ok = ElementSize(src.type) != 0 && src.type == dst.type &&
            src.rank >= 1 && src.rank == dst.rank &&
            dst.dims[dst.rank - 1] <= src.dims[src.rank - 1];
  for (int i = 0; ok && i + 1 < src.rank; ++i) ok = src.dims[i] == dst.dims[i];
  if (ok) return true;
  ctx.Report("%s: inputs %d, %d: dst must have src's int8/int32/float32 type "
             "and shape, with a last dim <= src's", kName, src_index,
             src_index + 1);
  return false;
}

bool Validate(KernelContext& ctx) {
  kernels::Checker check(ctx, kName);
  TensorView label, state;
  const int inputs = ctx.NumInputs();
  if (inputs < kFirstPair || (inputs - kFirstPair) % 2 != 0 ||
      ctx.NumOutputs() != 0) {
    return check.Fail("takes label, state and (src, dst) pairs; no outputs");
  }
  if (!check.Label(kLabel, &label) || !check.Required(kState, "state", &state) ||
      !check.Vector(state, "state", DType::kInt32, 2)) {
    return false;
  }
  for (int i = kFirstPair; i < inputs; i += 2) {
    if (!ValidatePair(ctx, i)) return false;
  }
  return true;
}

Status Prepare(KernelContext& ctx, void*) {
  return kernels::ToStatus(Validate(ctx));
}

Status Eval(KernelContext& ctx, void*) {
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  int32_t* state = tensors.In<int32_t>(kState);
  if (!tensors.ok()) return Status::kError;
  if (state[0] == 0) {
    for (int i = kFirstPair; i < ctx.NumInputs(); i += 2) {
      TensorView src, dst;
      if (!ctx.Input(i, &src) || !ctx.Input(i + 1, &dst) ||
          src.data == nullptr || dst.data == nullptr) {
        ctx.Report("%s: pair at input %d has no data", kName, i);
        return Status::kError;
      }
      int rows, src_last, dst_last;
      RowsAndLast(src, &rows, &src_last);
      RowsAndLast(dst, &rows, &dst_last);
      core::CopyLeadingChannels(src.data, dst.data, rows, src_last, dst_last,
                                ElementSize(src.type));
    }
    state[0] = 1;
  }
  if (label[0] >= 0) state[1] = core::NextStep(state[1]);
  return Status::kOk;
}

}  // namespace

const KernelOps& TrainInitOp() {
  static constexpr KernelOps ops{kName, Init, Prepare, Eval};
  return ops;
}

}  // namespace tflm_train
