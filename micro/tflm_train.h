// tflm-train's firmware entry point: registers every training op with a TFLM
// op resolver so that the stock MicroInterpreter runs a training step.
//
//   tflite::MicroMutableOpResolver<kBuiltins + tflm_train::kTrainingOpCount> resolver;
//   resolver.AddConv2D(); ...                     // the model's builtins
//   tflm_train::AddTrainingOps(resolver);         // the TFLT_* custom ops
//
// Build: add micro/ to the include path and compile micro/core/*.cc,
// micro/kernels/*.cc and micro/adapter/*.cc with the firmware (C++17,
// -ffp-contract=off).
#ifndef TFLM_TRAIN_MICRO_TFLM_TRAIN_H_
#define TFLM_TRAIN_MICRO_TFLM_TRAIN_H_

#include "kernel_api.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace tflm_train {
namespace adapter {

// The TFLM registration wrapping TrainingOps()[index]; null (and reported)
// if the adapter has no entry points for that many ops.
const TFLMRegistration* Registration(int index);

}  // namespace adapter

template <unsigned int tOpCount>
TfLiteStatus AddTrainingOps(tflite::MicroMutableOpResolver<tOpCount>& resolver) {
  static_assert(tOpCount >= kTrainingOpCount,
                "the resolver needs kTrainingOpCount slots on top of the builtins");
  int count = 0;
  const KernelOps* ops = TrainingOps(&count);
  for (int i = 0; i < count; ++i) {
    const TFLMRegistration* registration = adapter::Registration(i);
    if (registration == nullptr ||
        resolver.AddCustom(ops[i].name, registration) != kTfLiteOk) {
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_TFLM_TRAIN_H_
