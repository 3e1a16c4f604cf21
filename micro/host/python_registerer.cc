// Host-only entry point for the tflite-micro Python wheel:
//   runtime.Interpreter.from_bytes(..., custom_op_registerers=["TflmTrainRegisterOps"])
// The wheel finds the registerer with dlsym(RTLD_DEFAULT, name) and calls it
// as bool(tflite::PythonOpsResolver*), so the symbol is unmangled and is the
// only one this library exports (it is built with -fvisibility=hidden).
#include <cstring>

#include "kernel_api.h"
#include "python/tflite_micro/python_ops_resolver.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tflm_train.h"

namespace {

constexpr unsigned int kResolverCapacity = 200;
constexpr char kProbeName[] = "tflm-train layout probe";

// AddCustom is inline, so this library wrote into the wheel's resolver using
// its own idea of the layout (micro/host_abi). Confirm through the wheel's
// compiled FindOp that (1) every op is found, with our entry points, in
// consecutive slots, and (2) the slot right after them is beyond the wheel's
// registration count, i.e. the wheel counts exactly the slots we filled.
// A failure here only aborts the interpreter under construction.
bool WheelSeesOpsWhereWeWroteThem(tflite::PythonOpsResolver& resolver) {
  int count = 0;
  const tflm_train::KernelOps* ops = tflm_train::TrainingOps(&count);
  if (count == 0) return true;
  const TFLMRegistration* first = resolver.FindOp(ops[0].name);
  for (int i = 0; i < count; ++i) {
    const TFLMRegistration* found = resolver.FindOp(ops[i].name);
    if (found == nullptr || found != first + i ||
        found->invoke != tflm_train::adapter::Registration(i)->invoke) {
      return false;
    }
  }
  if (resolver.GetRegistrationLength() >= kResolverCapacity) return true;
  TFLMRegistration* next = const_cast<TFLMRegistration*>(first + count);
  TFLMRegistration saved;
  std::memcpy(&saved, next, sizeof(saved));
  *next = *first;
  next->custom_name = kProbeName;
  const bool beyond_count = resolver.FindOp(kProbeName) == nullptr;
  std::memcpy(next, &saved, sizeof(saved));
  return beyond_count;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) bool TflmTrainRegisterOps(
    tflite::PythonOpsResolver* resolver) {
  if (tflm_train::AddTrainingOps(*resolver) != kTfLiteOk) return false;
  if (!WheelSeesOpsWhereWeWroteThem(*resolver)) {
    MicroPrintf("tflm-train: the tflite-micro wheel's op resolver does not "
                "match micro/host_abi; re-derive it for this wheel version");
    return false;
  }
  return true;
}
