// Host-ABI description (see micro/host_abi/README.md): the table of kernel
// entry points a resolver stores per operator.
#ifndef TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_COMMON_H_
#define TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_COMMON_H_

#include <cstddef>
#include <cstdint>

#include "tensorflow/lite/c/common.h"

struct TFLMRegistration {
  // `buffer`/`length` are a custom op's options bytes.
  void* (*init)(TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(TfLiteContext* context, TfLiteNode* node);
  void (*reset)(TfLiteContext* context, void* buffer);
  int32_t builtin_code;     // filled in by the resolver
  const char* custom_name;  // filled in by the resolver; must outlive it
};

// The offsets are those of the 64-bit wheel; 32-bit targets compile this
// description only as a stand-in for TFLM's own headers (size and syntax checks).
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
static_assert(offsetof(TFLMRegistration, builtin_code) == 40, "TFLMRegistration");
static_assert(offsetof(TFLMRegistration, custom_name) == 48, "TFLMRegistration");
static_assert(sizeof(TFLMRegistration) == 56, "TFLMRegistration");
#endif  // 64-bit

#endif  // TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_COMMON_H_
