// Runs tflm_train::KernelOps as TFLM custom operators: the only place where
// kernels meet TfLiteContext / TfLiteNode / TFLMRegistration.
//
// Kernels reach the interpreter only through TfLiteContext's function table
// (GetEvalTensor, AllocatePersistentBuffer, RequestScratchBufferInArena,
// GetScratchBuffer), which MicroInterpreter fills in for every kernel. That
// C table is shared with TFLite and stable, unlike MicroContext's virtual
// table, whose slots change with build options such as USE_TFLM_COMPRESSION.
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernel_api.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tflm_train.h"

namespace tflm_train {
namespace adapter {
namespace {

// TFLM's callbacks do not say which operator they serve, so every op gets its
// own instantiation of them, keyed by its index in TrainingOps(). Raise this
// bound when the op table outgrows it (Registration() reports that).
constexpr int kMaxTrainingOps = 32;

enum class Phase { kInit, kPrepare, kEval };

const KernelOps& OpAt(int index) {
  int count = 0;
  return TrainingOps(&count)[index];
}

DType ToDType(TfLiteType type) {
  switch (type) {
    case kTfLiteFloat32:
      return DType::kFloat32;
    case kTfLiteInt32:
      return DType::kInt32;
    case kTfLiteInt8:
      return DType::kInt8;
    case kTfLiteUInt8:
      return DType::kUInt8;
    default:
      return DType::kOther;
  }
}

TfLiteStatus ToTfLite(Status status) {
  return status == Status::kOk ? kTfLiteOk : kTfLiteError;
}

// One node during one callback. In Init TFLM passes no node, so the node has
// no inputs or outputs then.
class NodeContext final : public KernelContext {
 public:
  NodeContext(TfLiteContext* context, TfLiteNode* node, Phase phase,
              const char* op_name)
      : context_(context), node_(node), phase_(phase), op_name_(op_name) {}

  int NumInputs() const override {
    return node_ == nullptr ? 0 : node_->inputs->size;
  }
  int NumOutputs() const override {
    return node_ == nullptr ? 0 : node_->outputs->size;
  }
  bool Input(int index, TensorView* out) override {
    return View(node_ == nullptr ? nullptr : node_->inputs, index, out);
  }
  bool Output(int index, TensorView* out) override {
    return View(node_ == nullptr ? nullptr : node_->outputs, index, out);
  }

  void* AllocatePersistent(size_t bytes) override {
    if (phase_ == Phase::kEval) {
      MicroPrintf("%s: persistent memory requested during Eval", op_name_);
      return nullptr;
    }
    return context_->AllocatePersistentBuffer(context_, bytes);
  }

  Status RequestScratch(size_t bytes, int* index) override {
    if (phase_ != Phase::kPrepare) {
      MicroPrintf("%s: scratch memory requested outside Prepare", op_name_);
      return Status::kError;
    }
    return context_->RequestScratchBufferInArena(context_, bytes, index) ==
                   kTfLiteOk
               ? Status::kOk
               : Status::kError;
  }

  void* Scratch(int index) override {
    if (phase_ != Phase::kEval) {
      MicroPrintf("%s: scratch buffer used outside Eval", op_name_);
      return nullptr;
    }
    return context_->GetScratchBuffer(context_, index);
  }

  void Report(const char* format, ...) override {
    va_list args;
    va_start(args, format);
    VMicroPrintf(format, args);
    va_end(args);
  }

 private:
  // Stack-only: a no-op class delete keeps the virtual destructor from
  // pulling the global heap into firmware builds.
  static void operator delete(void*) {}

  bool View(const TfLiteIntArray* tensor_indices, int index,
            TensorView* out) const {
    if (tensor_indices == nullptr || index < 0 ||
        index >= tensor_indices->size) {
      return false;
    }
    const int tensor_index = tensor_indices->data[index];
    if (tensor_index < 0) return false;
    const TfLiteEvalTensor* tensor =
        context_->GetEvalTensor(context_, tensor_index);
    if (tensor == nullptr) return false;
    const int rank = tensor->dims == nullptr ? 0 : tensor->dims->size;
    if (rank > kMaxRank) {
      MicroPrintf("%s: tensor %d has rank %d; at most %d is supported",
                  op_name_, tensor_index, rank, kMaxRank);
      return false;
    }
    out->data = tensor->data.data;
    out->type = ToDType(tensor->type);
    out->rank = rank;
    for (int d = 0; d < kMaxRank; ++d) {
      out->dims[d] = d < rank ? tensor->dims->data[d] : 0;
    }
    return true;
  }

  TfLiteContext* context_;
  TfLiteNode* node_;
  Phase phase_;
  const char* op_name_;
};

template <int kIndex>
void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  const KernelOps& op = OpAt(kIndex);
  NodeContext ctx(context, nullptr, Phase::kInit, op.name);
  return op.init(ctx, reinterpret_cast<const uint8_t*>(buffer), length);
}

// TFLM ignores what Init returns, so a rejected Init surfaces here.
template <int kIndex>
TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  const KernelOps& op = OpAt(kIndex);
  if (node->user_data == nullptr) {
    MicroPrintf("%s: Init failed", op.name);
    return kTfLiteError;
  }
  NodeContext ctx(context, node, Phase::kPrepare, op.name);
  return ToTfLite(op.prepare(ctx, node->user_data));
}

template <int kIndex>
TfLiteStatus Invoke(TfLiteContext* context, TfLiteNode* node) {
  const KernelOps& op = OpAt(kIndex);
  NodeContext ctx(context, node, Phase::kEval, op.name);
  return ToTfLite(op.eval(ctx, node->user_data));
}

struct RegistrationTable {
  TFLMRegistration entries[kMaxTrainingOps];
};

// builtin_code and custom_name are filled in by the resolver's AddCustom.
template <int... kIndices>
constexpr RegistrationTable MakeTable(std::integer_sequence<int, kIndices...>) {
  return {{{Init<kIndices>, nullptr, Prepare<kIndices>, Invoke<kIndices>,
            nullptr, 0, nullptr}...}};
}

constexpr RegistrationTable kRegistrations =
    MakeTable(std::make_integer_sequence<int, kMaxTrainingOps>{});

}  // namespace

const TFLMRegistration* Registration(int index) {
  if (index < 0 || index >= kMaxTrainingOps) {
    MicroPrintf("tflm-train: op #%d has no adapter entry points; raise "
                "kMaxTrainingOps (%d) in tflm_adapter.cc",
                index, kMaxTrainingOps);
    return nullptr;
  }
  return &kRegistrations.entries[index];
}

}  // namespace adapter
}  // namespace tflm_train
