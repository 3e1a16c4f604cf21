// Host-ABI description (see micro/host_abi/README.md): the C structs through
// which the pinned wheel hands a node to a kernel. Only members the adapter
// reads are named; the rest are placeholders of the same size so that every
// named member sits at the wheel's offset (checked by the static_asserts).
#ifndef TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_C_COMMON_H_
#define TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_C_COMMON_H_

#include <cstddef>
#include <cstdint>

// The wheel is built with static memory; the node layout below is only that
// variant, so the build must say so (the real headers need the same define).
#ifndef TF_LITE_STATIC_MEMORY
#error "host_abi describes a TF_LITE_STATIC_MEMORY build: add -DTF_LITE_STATIC_MEMORY=1"
#endif

extern "C" {

typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

// Element type codes; only those the adapter maps to tflm_train::DType.
typedef enum {
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt8 = 9,
} TfLiteType;

typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

// Every member of the wheel's union is a pointer; `data` is the untyped one.
typedef union TfLitePtrUnion {
  void* data;
} TfLitePtrUnion;

typedef struct TfLiteEvalTensor {
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteType type;
} TfLiteEvalTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
} TfLiteNode;

typedef void* TfLiteUnusedMember;  // a pointer-sized slot the adapter never reads

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteUnusedMember get_execution_plan;
  TfLiteUnusedMember tensors;
  TfLiteUnusedMember impl_;
  TfLiteUnusedMember resize_tensor;
  TfLiteUnusedMember report_error;
  TfLiteUnusedMember add_tensors;
  TfLiteUnusedMember get_node_and_registration;
  TfLiteUnusedMember replace_node_subsets;
  int recommended_num_threads;
  TfLiteUnusedMember get_external_context;
  TfLiteUnusedMember set_external_context;
  bool allow_fp32_relax_to_fp16;
  TfLiteUnusedMember profiler;
  void* (*AllocatePersistentBuffer)(struct TfLiteContext* ctx, size_t bytes);
  TfLiteUnusedMember allocate_buffer_for_eval;
  TfLiteStatus (*RequestScratchBufferInArena)(struct TfLiteContext* ctx,
                                              size_t bytes, int* buffer_idx);
  void* (*GetScratchBuffer)(struct TfLiteContext* ctx, int buffer_idx);
  TfLiteUnusedMember resize_tensor_explicit;
  TfLiteUnusedMember preview_delegate_partitioning;
  TfLiteUnusedMember get_tensor;
  TfLiteEvalTensor* (*GetEvalTensor)(const struct TfLiteContext* context,
                                     int tensor_idx);
  // Later members are never touched and the struct is never allocated here.
} TfLiteContext;

}  // extern "C"

// The offsets are those of the 64-bit wheel; 32-bit targets compile this
// description only as a stand-in for TFLM's own headers (size and syntax checks).
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
static_assert(sizeof(TfLiteType) == 4, "C enums are int-sized");
static_assert(offsetof(TfLiteEvalTensor, type) == 16, "TfLiteEvalTensor");
static_assert(offsetof(TfLiteNode, user_data) == 24, "TfLiteNode");
static_assert(offsetof(TfLiteNode, custom_initial_data_size) == 48, "TfLiteNode");
static_assert(sizeof(TfLiteNode) == 56, "TfLiteNode");
static_assert(offsetof(TfLiteContext, AllocatePersistentBuffer) == 112, "TfLiteContext");
static_assert(offsetof(TfLiteContext, RequestScratchBufferInArena) == 128, "TfLiteContext");
static_assert(offsetof(TfLiteContext, GetScratchBuffer) == 136, "TfLiteContext");
static_assert(offsetof(TfLiteContext, GetEvalTensor) == 168, "TfLiteContext");
#endif  // 64-bit

#endif  // TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_C_COMMON_H_
