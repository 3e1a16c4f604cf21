// Runs one training kernel (micro/kernels) through Init, Prepare and Eval with
// a fake KernelContext, for tests/test_micro_kernels.py (loaded with ctypes).
// Non-constant tensors show no data at Prepare, as in TFLM.
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "kernel_api.h"

using tflm_train::DType;
using tflm_train::KernelContext;
using tflm_train::KernelOps;
using tflm_train::Status;
using tflm_train::TensorView;

extern "C" {
// Mirrored by a ctypes.Structure in the test.
struct ShimTensor {
  void* data;
  int32_t type;  // DType's value
  int32_t rank;
  int32_t dims[tflm_train::kMaxRank];
  int32_t present;
  int32_t constant;
};
}

namespace {

enum class Phase { kInit, kPrepare, kEval };

class FakeContext : public KernelContext {
 public:
  FakeContext(const ShimTensor* inputs, int num_inputs,
              const ShimTensor* outputs, int num_outputs, char* message,
              int message_size)
      : inputs_(inputs), num_inputs_(num_inputs), outputs_(outputs),
        num_outputs_(num_outputs), message_(message),
        message_size_(message_size) {
    message_[0] = '\0';
  }

  void set_phase(Phase phase) { phase_ = phase; }

  int NumInputs() const override { return num_inputs_; }
  int NumOutputs() const override { return num_outputs_; }
  bool Input(int index, TensorView* out) override {
    return View(inputs_, num_inputs_, index, out);
  }
  bool Output(int index, TensorView* out) override {
    return View(outputs_, num_outputs_, index, out);
  }
  void* AllocatePersistent(size_t bytes) override { return Allocate(bytes); }
  Status RequestScratch(size_t bytes, int* index) override {
    if (phase_ != Phase::kPrepare || num_scratch_ == kMaxScratch) {
      return Status::kError;
    }
    scratch_[num_scratch_] = Allocate(bytes);
    if (scratch_[num_scratch_] == nullptr) return Status::kError;
    *index = num_scratch_++;
    return Status::kOk;
  }
  void* Scratch(int index) override {
    return index >= 0 && index < num_scratch_ ? scratch_[index] : nullptr;
  }
  void Report(const char* format, ...) override {
    const size_t used = strlen(message_);
    if (used + 1 >= static_cast<size_t>(message_size_)) return;
    va_list args;
    va_start(args, format);
    vsnprintf(message_ + used, message_size_ - used - 1, format, args);
    va_end(args);
    strcat(message_, "\n");
  }

 private:
  static constexpr int kMaxScratch = 4;

  bool View(const ShimTensor* tensors, int count, int index, TensorView* out) {
    if (index < 0 || index >= count || !tensors[index].present) return false;
    const ShimTensor& t = tensors[index];
    out->data = (phase_ == Phase::kEval || t.constant) ? t.data : nullptr;
    out->type = static_cast<DType>(t.type);
    out->rank = t.rank;
    for (int i = 0; i < tflm_train::kMaxRank; ++i) out->dims[i] = t.dims[i];
    return true;
  }

  void* Allocate(size_t bytes) {
    const size_t aligned = (bytes + 15) & ~static_cast<size_t>(15);
    if (aligned > sizeof(arena_) - arena_used_) return nullptr;
    void* p = arena_ + arena_used_;
    arena_used_ += aligned;
    return p;
  }

  const ShimTensor* inputs_;
  int num_inputs_;
  const ShimTensor* outputs_;
  int num_outputs_;
  char* message_;
  int message_size_;
  Phase phase_ = Phase::kInit;
  alignas(16) unsigned char arena_[4096];
  size_t arena_used_ = 0;
  void* scratch_[kMaxScratch] = {};
  int num_scratch_ = 0;
};

}  // namespace

extern "C" {

// 0: ok; 1: no such op; 2: Init failed; 3: Prepare failed; 4: Eval failed.
int shim_run_op(const char* name, const uint8_t* options, int options_size,
                const ShimTensor* inputs, int num_inputs,
                const ShimTensor* outputs, int num_outputs, char* message,
                int message_size) {
  int count = 0;
  const KernelOps* ops = tflm_train::TrainingOps(&count);
  const KernelOps* op = nullptr;
  for (int i = 0; i < count; ++i) {
    if (strcmp(ops[i].name, name) == 0) op = &ops[i];
  }
  FakeContext ctx(inputs, num_inputs, outputs, num_outputs, message,
                  message_size);
  if (op == nullptr) return 1;
  void* data = op->init(ctx, options, static_cast<size_t>(options_size));
  if (data == nullptr) return 2;
  ctx.set_phase(Phase::kPrepare);
  if (op->prepare(ctx, data) != Status::kOk) return 3;
  ctx.set_phase(Phase::kEval);
  return op->eval(ctx, data) == Status::kOk ? 0 : 4;
}

}  // extern "C"
