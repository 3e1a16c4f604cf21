// The interface between tflm-train's kernels and TFLM.
//
// Kernels (micro/kernels/*.cc) see only these types; micro/adapter/ is the one
// place that names TFLM types (TfLiteContext, TfLiteNode, TFLMRegistration,
// MicroContext, MicroMutableOpResolver). When TFLM changes its API, only the
// adapter changes.
#ifndef TFLM_TRAIN_MICRO_KERNEL_API_H_
#define TFLM_TRAIN_MICRO_KERNEL_API_H_

#include <cstddef>
#include <cstdint>

namespace tflm_train {

enum class Status { kOk = 0, kError = 1 };

enum class DType { kFloat32, kInt32, kInt8, kUInt8, kOther };

constexpr int kMaxRank = 6;

// A tensor as the kernel sees it at Prepare and Eval time. `data` is null at
// Prepare for non-constant tensors (the planner has not placed them yet).
struct TensorView {
  void* data = nullptr;
  DType type = DType::kOther;
  int rank = 0;
  int32_t dims[kMaxRank] = {};

  int64_t NumElements() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  template <typename T>
  T* As() const { return static_cast<T*>(data); }
};

// Wraps one node during Init/Prepare/Eval. Implemented by the adapter.
class KernelContext {
 public:
  virtual ~KernelContext() = default;
  virtual int NumInputs() const = 0;
  virtual int NumOutputs() const = 0;
  // False if the input is absent (tensor index -1) or out of range.
  virtual bool Input(int index, TensorView* out) = 0;
  virtual bool Output(int index, TensorView* out) = 0;
  // Op data, allocated once in Init; lives for the interpreter's lifetime.
  virtual void* AllocatePersistent(size_t bytes) = 0;
  // Prepare only: reserves arena scratch; the index is valid at Eval.
  virtual Status RequestScratch(size_t bytes, int* index) = 0;
  // Eval only.
  virtual void* Scratch(int index) = 0;
  // printf-style message through MicroPrintf.
  virtual void Report(const char* format, ...) = 0;
};

// One custom operator. `init` parses the custom options into op data
// (allocated with ctx.AllocatePersistent); it returns nullptr on failure and
// reports why. `prepare` validates every input/output against the options and
// fixes all sizes; `eval` must not allocate.
struct KernelOps {
  const char* name;  // the custom code, e.g. "TFLT_CONV_GRAD_UPDATE"
  void* (*init)(KernelContext& ctx, const uint8_t* options, size_t options_size);
  Status (*prepare)(KernelContext& ctx, void* op_data);
  Status (*eval)(KernelContext& ctx, void* op_data);
};

// Every training op, for the adapter's registration loop (micro/kernels/all_ops.cc).
const KernelOps* TrainingOps(int* count);

// How many ops TrainingOps() lists in a firmware build: the resolver slots
// AddTrainingOps needs on top of the model's builtins. all_ops.cc checks it.
constexpr int kTrainingOpCount = 14;

}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_KERNEL_API_H_
