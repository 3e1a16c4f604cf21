// Host-only entry point for the tflite-micro Python wheel:
//   runtime.Interpreter.from_bytes(..., custom_op_registerers=["TflmTrainRegisterOps"])
// The wheel finds the registerer with dlsym(RTLD_DEFAULT, name) and calls it
// as bool(tflite::PythonOpsResolver*), so the symbol is unmangled and is the
// only one this library exports (it is built with -fvisibility=hidden).
#include "kernel_api.h"
#include "python/tflite_micro/python_ops_resolver.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tflm_train.h"

namespace {

constexpr unsigned int kResolverCapacity = 200;

// Before writing into the resolver: the registration count sits where this
// build expects it, and the wheel's FindOp hands back a registration whose
// op code this build reads at the right offset (every PythonOpsResolver
// registers CONV_2D).
bool ResolverLayoutAsExpected(tflite::PythonOpsResolver& resolver) {
  const unsigned int registered = resolver.GetRegistrationLength();
  const TFLMRegistration* conv = resolver.FindOp(tflite::BuiltinOperator_CONV_2D);
  return registered > 0 && registered <= kResolverCapacity && conv != nullptr &&
         conv->builtin_code == tflite::BuiltinOperator_CONV_2D;
}

// After writing: the wheel's own lookup finds each op with our entry points.
bool OpsFoundByWheel(const tflite::PythonOpsResolver& resolver) {
  int count = 0;
  const tflm_train::KernelOps* ops = tflm_train::TrainingOps(&count);
  for (int i = 0; i < count; ++i) {
    const TFLMRegistration* found = resolver.FindOp(ops[i].name);
    if (found == nullptr ||
        found->invoke != tflm_train::adapter::Registration(i)->invoke) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) bool TflmTrainRegisterOps(
    tflite::PythonOpsResolver* resolver) {
  if (!ResolverLayoutAsExpected(*resolver)) {
    MicroPrintf("tflm-train: the tflite-micro wheel's op resolver does not "
                "match micro/host_abi; rebuild it for this wheel version");
    return false;
  }
  if (tflm_train::AddTrainingOps(*resolver) != kTfLiteOk) return false;
  if (!OpsFoundByWheel(*resolver)) {
    MicroPrintf("tflm-train: the wheel cannot find the registered training "
                "ops; micro/host_abi does not match this tflite-micro wheel");
    return false;
  }
  return true;
}
